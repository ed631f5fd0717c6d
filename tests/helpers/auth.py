"""API keys for tests: one per role, their entries in a keys file, and bearer headers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.api.security.api_keys import ApiKeyEntry, entry_for, new_key
from app.api.security.principal import Role


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Key:
    """A key and the entry the server keeps of it."""

    key: str
    entry: ApiKeyEntry

    @classmethod
    def new(
        cls,
        name: str,
        role: Role,
        tenant: str | None = None,
        actions: list[str] | None = None,
    ) -> Key:
        key = new_key()
        return cls(key, entry_for(key, name, role, tenant, actions))

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


@dataclass
class KeysFile:
    """A keys file (one entry per line) that a test rewrites while the server runs."""

    path: Path
    keys: list[Key] = field(default_factory=list)

    def write(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.path.write_text("".join(f"{key.entry.line()}\n" for key in keys))


def role_keys() -> dict[Role, Key]:
    """A key of each role, of the server's own tenant, not limited to any action."""
    return {role: Key.new(f"test-{role}", role) for role in Role}
