"""User action settings (retries, lease) and the back-off they give."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.settings import Settings


class RetryPolicy(StrEnum):
    FIXED = "FIXED"
    LINEAR = "LINEAR"
    EXPONENTIAL = "EXPONENTIAL"


@dataclass(frozen=True)
class ActionSettings:
    name: str
    retry_count: int
    retry_after_seconds: float
    retry_policy: RetryPolicy
    timeout_seconds: float
    # A queued attempt that no worker polls within this long fails (retried by the policy);
    # None: it waits for ever.
    poll_timeout_seconds: float | None = None

    @classmethod
    def defaults(cls, name: str, settings: Settings) -> ActionSettings:
        return cls(
            name=name,
            retry_count=settings.default_retry_count,
            retry_after_seconds=settings.default_retry_after_seconds,
            retry_policy=RetryPolicy(settings.default_retry_policy),
            timeout_seconds=settings.default_timeout_seconds,
        )

    def retry_delay_seconds(self, failed_attempt: int) -> float:
        """Back-off before attempt ``failed_attempt + 1``."""
        if self.retry_policy is RetryPolicy.FIXED:
            return self.retry_after_seconds
        if self.retry_policy is RetryPolicy.LINEAR:
            return self.retry_after_seconds * failed_attempt
        return float(self.retry_after_seconds * 2 ** (failed_attempt - 1))

    def may_retry(self, failed_attempt: int) -> bool:
        return failed_attempt <= self.retry_count

    @property
    def lease_ms(self) -> int:
        return int(self.timeout_seconds * 1000)

    @property
    def poll_timeout_ms(self) -> int:
        """The poll timeout in ms (at least 1), or 0 for none."""
        if self.poll_timeout_seconds is None:
            return 0
        return max(1, round(self.poll_timeout_seconds * 1000))
