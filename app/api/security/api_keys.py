"""API keys: random bearer tokens, each known to the server only by its SHA-256.

An entry is ``{"name": "ci", "role": "operator", "tenant": "acme", "actions": ["a"],
"sha256": "<hex>"}`` (``tenant`` and ``actions`` optional). Entries come from
``ORCHY_API_KEYS`` (a JSON list) and from the file ``ORCHY_API_KEYS_FILE`` (a JSON list, or
one JSON object per line), which is read again every ``ORCHY_API_KEYS_RELOAD_SECONDS`` when a
request comes, so that keys are added and revoked without a restart.

A plain SHA-256 suffices because a key is 256 random bits (``new_key``): nobody can search
that space from the hash, so the slow hashes made for passwords (bcrypt, argon2) would only
add their milliseconds to every request."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.api.security.principal import Principal, Role
from app.api.security.settings_errors import AuthSettingsError
from app.store.keys import NAMESPACE_RULE, is_namespace

log = logging.getLogger("orchy.auth")

KEY_PREFIX = "orchy_"
KEY_BYTES = 32
SHA256_HEX = r"^[0-9a-f]{64}$"


class ApiKeysError(AuthSettingsError):
    """The API key entries cannot be read; the message names the source and the entry."""


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, with a prefix that tells what it is."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyEntry(BaseModel):
    """One key as the server keeps it: who it is, what it may, and the key's SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    role: Role
    tenant: str | None = None
    actions: list[str] | None = None
    sha256: str = Field(pattern=SHA256_HEX)

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str | None) -> str | None:
        if tenant is not None and not is_namespace(tenant):
            raise ValueError(f"a tenant name is {NAMESPACE_RULE}")
        return tenant

    @field_validator("actions")
    @classmethod
    def _actions(cls, actions: list[str] | None) -> list[str] | None:
        if actions is not None and not all(actions):
            raise ValueError("an action name is not empty")
        return actions

    def principal(self) -> Principal:
        actions = None if self.actions is None else frozenset(self.actions)
        return Principal(name=self.name, role=self.role, tenant=self.tenant, actions=actions)

    def line(self) -> str:
        """The entry as one line of a keys file."""
        return json.dumps(self.model_dump(exclude_none=True))


def entry_for(
    key: str, name: str, role: Role, tenant: str | None = None, actions: list[str] | None = None
) -> ApiKeyEntry:
    return ApiKeyEntry(name=name, role=role, tenant=tenant, actions=actions, sha256=key_hash(key))


def parse_entries(text: str, source: str) -> list[ApiKeyEntry]:
    """The entries of ``text``: a JSON list of entries, or one entry per line (blank lines
    and lines starting with ``#`` skipped). ApiKeysError names ``source`` and the entry."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            documents = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ApiKeysError(f"{source}: not valid JSON: {error}") from None
        numbered = list(enumerate(documents, start=1))
        what = "entry"
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ApiKeysError(f"{source}: line {number}: not valid JSON: {error}") from None
        what = "line"
    return [_entry(document, f"{source}: {what} {number}") for number, document in numbered]


def _entry(document: Any, where: str) -> ApiKeyEntry:
    if isinstance(document, dict) and "key" in document:
        raise ApiKeysError(
            f"{where}: holds a key itself; keep only its sha256 (orchy auth new-key prints it)"
        )
    try:
        return ApiKeyEntry.model_validate(document)
    except ValidationError as error:
        # The messages only: never the input, which may be a key written in the wrong field.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'entry'}: {item['msg']}"
            for item in error.errors()
        )
        raise ApiKeysError(f"{where}: {problems}") from None


def index(entries: list[ApiKeyEntry]) -> dict[str, Principal]:
    """Principals by key hash; ApiKeysError if two entries have the same key."""
    by_hash: dict[str, Principal] = {}
    for entry in entries:
        if entry.sha256 in by_hash:
            raise ApiKeysError(
                f"two entries have the same key (names {entry.name!r} and "
                f"{by_hash[entry.sha256].name!r})"
            )
        by_hash[entry.sha256] = entry.principal()
    return by_hash


@dataclass
class ApiKeys:
    """The server's keys: a dict lookup of the presented key's hash per request, and the
    file read again at most every ``reload_seconds`` (kept as it was if it became unreadable
    or invalid, which is logged)."""

    inline: list[ApiKeyEntry]
    path: Path | None
    reload_seconds: float
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._file_text: str | None = None
        self._refused_text: str | None = None  # complained about once, not at every read
        self._by_hash: dict[str, Principal] = {}
        self._next_check = 0.0
        if self.path is not None:
            try:
                text = self.path.read_text()
            except OSError as error:
                raise ApiKeysError(f"{self.path}: cannot read: {error.strerror}") from None
            self._load(text)
        else:
            self._by_hash = index(self.inline)
        self._next_check = self.clock() + self.reload_seconds

    @classmethod
    def of(cls, file: str, inline: str, reload_seconds: float) -> ApiKeys | None:
        """The keys of the settings ``ORCHY_API_KEYS_FILE`` and ``ORCHY_API_KEYS``; None if
        neither is set."""
        if not file and not inline:
            return None
        if inline and not inline.strip().startswith("["):
            raise ApiKeysError("ORCHY_API_KEYS: a JSON list of entries")
        entries = parse_entries(inline, "ORCHY_API_KEYS") if inline else []
        return cls(entries, Path(file) if file else None, reload_seconds)

    def find(self, key: str) -> Principal | None:
        if self.path is not None and self.clock() >= self._next_check:
            self._reload()
        return self._by_hash.get(hashlib.sha256(key.encode()).hexdigest())

    def _reload(self) -> None:
        assert self.path is not None
        self._next_check = self.clock() + self.reload_seconds
        try:
            text = self.path.read_text()
        except OSError as error:
            log.warning(
                "API keys: cannot read %s (%s); keeping the keys read before",
                self.path,
                error.strerror,
            )
            return
        if text in (self._file_text, self._refused_text):
            return
        try:
            self._load(text)
        except ApiKeysError as error:
            self._refused_text = text
            log.warning("API keys: %s; keeping the keys read before", error)
            return
        log.info("API keys: read %s again, %d keys", self.path, len(self._by_hash))

    def _load(self, text: str) -> None:
        assert self.path is not None
        self._by_hash = index([*self.inline, *parse_entries(text, str(self.path))])
        self._file_text = text
