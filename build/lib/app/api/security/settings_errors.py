"""Authentication settings the server cannot start with (a keys file that does not read, an
issuer without an audience): ``orchy serve`` says what is wrong in one line and exits 1."""

from __future__ import annotations


class AuthSettingsError(ValueError):
    """The message names the setting (or file, and entry) and what is wrong with it."""
