"""What ``orchy serve`` checks before it starts anything: a server anyone on the network can
reach must check credentials, unless told ``--insecure``; a server on loopback may run open,
and says so."""

from __future__ import annotations

from app.api.security.browsers import BadOrigin, allowed_origins
from app.api.security.loopback import is_loopback_bind
from app.settings import Settings

HOW_TO_AUTHENTICATE = (
    "API keys (ORCHY_API_KEYS_FILE or ORCHY_API_KEYS) or OIDC tokens (ORCHY_OIDC_ISSUER)"
)


def refusal(settings: Settings) -> str | None:
    """Why the server must not start with ``settings`` (its address in ``settings.host``);
    None when it may."""
    try:
        allowed_origins(settings.allowed_origins)
    except BadOrigin as error:
        return str(error)
    if settings.auth_configured or settings.insecure or is_loopback_bind(settings.host):
        return None
    return (
        f"refusing to serve on {settings.host} without authentication: anyone who reaches "
        f"this address could read and change every workflow and run. Configure "
        f"{HOW_TO_AUTHENTICATE}, bind to 127.0.0.1 (--host), or pass --insecure "
        "(ORCHY_INSECURE=true) to serve open anyway"
    )


def notice(settings: Settings) -> str | None:
    """The line the server logs at start when it checks no credentials; None when it does."""
    if settings.auth_configured:
        return None
    if is_loopback_bind(settings.host):
        return (
            "running without authentication: anyone on this machine can call this server "
            "(ORCHY_API_KEYS_FILE, ORCHY_API_KEYS or ORCHY_OIDC_ISSUER make it require tokens)"
        )
    return (
        f"running without authentication on {settings.host} (--insecure): anyone who can "
        f"reach port {settings.port} can call this server"
    )
