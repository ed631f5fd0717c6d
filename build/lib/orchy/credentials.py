"""What a client shows the server and whom it trusts: a bearer token, the CA bundle that signs
the server's certificate, and a certificate of its own for servers that ask for one (mTLS).

The run client, the worker library and the ``orchy`` CLI read the same settings:
``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``, ``ORCHY_CLIENT_CERT`` and ``ORCHY_CLIENT_KEY``. The token
is kept out of every ``repr`` and is only ever written into the ``Authorization`` header.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, fields, replace

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

AUTHORIZATION = "Authorization"


class CredentialsError(ValueError):
    """A CA bundle or client certificate that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Credentials:
    """A bearer token, and the files of TLS: ``None`` leaves a field to the settings."""

    token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def over(self, base: Credentials) -> Credentials:
        """These credentials, with ``base``'s in the fields left ``None`` here."""
        unset = {
            item.name: getattr(base, item.name)
            for item in fields(self)
            if getattr(self, item.name) is None
        }
        return replace(self, **unset)

    def headers(self) -> dict[str, str]:
        """The ``Authorization: Bearer`` header when there is a token, else nothing."""
        return {AUTHORIZATION: f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of a CA bundle and/or a client certificate; ``None`` when neither
        is set (the system's trusted CAs then verify the server, as they do by default)."""
        if self.client_key and not self.client_cert:
            raise CredentialsError("a client key needs its certificate (ORCHY_CLIENT_CERT)")
        if not self.ca_bundle and not self.client_cert:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_bundle or None)
        except (OSError, ssl.SSLError) as error:
            raise CredentialsError(f"cannot use the CA bundle {self.ca_bundle}: {error}") from None
        if self.client_cert:
            try:
                context.load_cert_chain(self.client_cert, self.client_key or None)
            except (OSError, ssl.SSLError) as error:
                raise CredentialsError(
                    f"cannot use the client certificate {self.client_cert}: {error}"
                ) from None
        return context


class CredentialSettings(BaseSettings):
    """The ``ORCHY_TOKEN``, ``ORCHY_CA_BUNDLE``, ``ORCHY_CLIENT_CERT`` and ``ORCHY_CLIENT_KEY``
    settings, shared by the client's and the worker's settings."""

    model_config = SettingsConfigDict(env_prefix="ORCHY_", extra="ignore")

    # The bearer token sent with every request (an API key or an access token).
    token: SecretStr | None = None
    # A PEM file of the CAs that sign the server's certificate (default: the system's).
    ca_bundle: str = ""
    # A PEM certificate (and its key, when not in the same file) for servers that ask for one.
    client_cert: str = ""
    client_key: str = ""

    @property
    def credentials(self) -> Credentials:
        """These settings as ``Credentials``."""
        return Credentials(
            token=self.token.get_secret_value() if self.token else None,
            ca_bundle=self.ca_bundle or None,
            client_cert=self.client_cert or None,
            client_key=self.client_key or None,
        )


__all__ = ["CredentialSettings", "Credentials", "CredentialsError"]
