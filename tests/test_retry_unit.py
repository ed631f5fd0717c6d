"""User action settings: defaults, back-off delays per policy, retry count, lease and poll
timeouts in ms. Pure: no Redis, no server."""

from __future__ import annotations

import pytest

from app.engine.retry import ActionSettings, RetryPolicy
from app.settings import Settings


def settings_of(
    policy: RetryPolicy,
    *,
    after: float = 2.0,
    count: int = 3,
    timeout: float = 30.0,
    poll_timeout: float | None = None,
) -> ActionSettings:
    return ActionSettings(
        name="charge-card",
        retry_count=count,
        retry_after_seconds=after,
        retry_policy=policy,
        timeout_seconds=timeout,
        poll_timeout_seconds=poll_timeout,
    )


def test_defaults_come_from_the_settings() -> None:
    settings = Settings(
        default_retry_count=7,
        default_retry_after_seconds=2.5,
        default_retry_policy="LINEAR",
        default_timeout_seconds=12.0,
    )

    action = ActionSettings.defaults("send-email", settings)

    assert action == ActionSettings(
        name="send-email",
        retry_count=7,
        retry_after_seconds=2.5,
        retry_policy=RetryPolicy.LINEAR,
        timeout_seconds=12.0,
        poll_timeout_seconds=None,
    )
    assert action.retry_policy is RetryPolicy.LINEAR


def test_the_built_in_defaults_are_three_exponential_retries_after_one_second() -> None:
    action = ActionSettings.defaults("send-email", Settings())

    assert action.retry_count == 3
    assert action.retry_after_seconds == 1.0
    assert action.retry_policy is RetryPolicy.EXPONENTIAL
    assert action.timeout_seconds == 60.0
    assert action.poll_timeout_seconds is None
    assert [action.retry_delay_seconds(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_the_policies_are_named_in_capitals() -> None:
    assert [policy.value for policy in RetryPolicy] == ["FIXED", "LINEAR", "EXPONENTIAL"]
    assert RetryPolicy("FIXED") is RetryPolicy.FIXED


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy.FIXED, [2.0, 2.0, 2.0, 2.0]),
        (RetryPolicy.LINEAR, [2.0, 4.0, 6.0, 8.0]),
        (RetryPolicy.EXPONENTIAL, [2.0, 4.0, 8.0, 16.0]),
    ],
)
def test_the_back_off_of_each_policy(policy: RetryPolicy, expected: list[float]) -> None:
    action = settings_of(policy, after=2.0)

    delays = [action.retry_delay_seconds(attempt) for attempt in (1, 2, 3, 4)]

    assert delays == expected
    assert all(isinstance(delay, float) for delay in delays)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy.FIXED, [0.5, 0.5, 0.5]),
        (RetryPolicy.LINEAR, [0.5, 1.0, 1.5]),
        (RetryPolicy.EXPONENTIAL, [0.5, 1.0, 2.0]),
    ],
)
def test_the_back_off_scales_with_retry_after(policy: RetryPolicy, expected: list[float]) -> None:
    action = settings_of(policy, after=0.5)

    assert [action.retry_delay_seconds(attempt) for attempt in (1, 2, 3)] == expected


def test_an_exponential_back_off_is_a_float_even_from_an_int() -> None:
    action = ActionSettings("a", 3, 3, RetryPolicy.EXPONENTIAL, 1.0)  # an int from a client

    delay = action.retry_delay_seconds(3)

    assert delay == 12.0
    assert type(delay) is float


def test_an_attempt_may_be_retried_while_within_the_retry_count() -> None:
    action = settings_of(RetryPolicy.FIXED, count=2)

    assert [action.may_retry(attempt) for attempt in (1, 2, 3, 4)] == [True, True, False, False]


def test_no_retries_when_the_count_is_zero() -> None:
    assert not settings_of(RetryPolicy.FIXED, count=0).may_retry(1)


@pytest.mark.parametrize(
    ("timeout", "expected"), [(30.0, 30_000), (0.0015, 1), (2.9999, 2999), (0.0004, 0)]
)
def test_the_lease_is_the_timeout_in_whole_ms(timeout: float, expected: int) -> None:
    lease = settings_of(RetryPolicy.FIXED, timeout=timeout).lease_ms

    assert lease == expected
    assert type(lease) is int


def test_no_poll_timeout_is_zero_ms() -> None:
    assert settings_of(RetryPolicy.FIXED, poll_timeout=None).poll_timeout_ms == 0


@pytest.mark.parametrize(
    ("poll_timeout", "expected"),
    [(5.0, 5000), (0.0026, 3), (0.0024, 2), (0.0001, 1), (0.0, 1)],
)
def test_a_poll_timeout_is_rounded_to_ms_and_at_least_one(
    poll_timeout: float, expected: int
) -> None:
    ms = settings_of(RetryPolicy.FIXED, poll_timeout=poll_timeout).poll_timeout_ms

    assert ms == expected
    assert type(ms) is int
