"""Who is calling: the bearer token of a request, an API key or an OIDC access token, turned
into the request's ``Principal`` by ``AuthenticationMiddleware``, which also checks that the
principal's role has the permission of the route the request reaches, before anything else
reads the request (its body included)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.security.api_keys import ApiKeys
from app.api.security.oidc import OidcVerifier
from app.api.security.permissions import Permission, roles_with
from app.api.security.principal import PRINCIPAL_SCOPE_KEY, PUBLIC_CALLER, Principal
from app.api.security.refusals import Forbidden, Unauthorized, names, refusal
from app.api.security.route_table import RouteTable
from app.engine.errors import EngineError
from app.settings import Settings

AUTHORIZATION = b"authorization"
BEARER = "bearer"
# A JWT is three base64url parts joined by dots; an API key has no dot.
JWT_DOTS = 2
POLICY_VIOLATION = 1008  # the WebSocket close code of a refused connection
ROLES_WITH = {permission: roles_with(permission) for permission in Permission}
MISSING = "this route needs a bearer token: send the header Authorization: Bearer <token>"


@dataclass
class Authenticator:
    keys: ApiKeys | None
    oidc: OidcVerifier | None

    @classmethod
    def of(cls, settings: Settings) -> Authenticator | None:
        """The authenticator of the settings; None when they configure no authentication."""
        keys = ApiKeys.of(
            settings.api_keys_file, settings.api_keys, settings.api_keys_reload_seconds
        )
        oidc = OidcVerifier.of(settings)
        if keys is None and oidc is None:
            return None
        return cls(keys, oidc)

    async def principal(self, token: str) -> Principal:
        """The caller ``token`` stands for; Unauthorized or Forbidden with the reason."""
        if self.keys is not None:
            principal = self.keys.find(token)
            if principal is not None:
                return principal
        if self.oidc is not None and token.count(".") == JWT_DOTS:
            return await self.oidc.principal(token)
        raise Unauthorized("the bearer token is not a valid key")


def bearer_token(scope: Scope) -> str | None:
    """The request's bearer token; None without an Authorization header. Unauthorized for
    an Authorization header of another scheme, or several."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == AUTHORIZATION:
            if found is not None:
                raise Unauthorized("several Authorization headers")
            found = value
    if found is None:
        return None
    scheme, _, token = found.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        raise Unauthorized("the Authorization header is not 'Bearer <token>'")
    return token


class AuthenticationMiddleware:
    """Sets the request's principal from its bearer token and checks its role against the
    permission of the route the request reaches (``RouteTable``), before anything reads the
    request. Refusals: 401 without a valid token, 403 for a role without the permission (or
    a token that gives no role), 503 when the issuer's keys cannot be fetched. A request to
    a public route passes without a token; one that reaches no route needs a valid token
    (then gets the router's 404 or 405)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, table: RouteTable) -> None:
        self.app = app
        self.authenticator = authenticator
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route takes WebSockets; one that did would need its own check.
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        permission = self.table.permission(scope["method"], _route_path(scope))
        if permission is Permission.PUBLIC:
            # Whatever token comes along is not looked at (nor refused).
            scope[PRINCIPAL_SCOPE_KEY] = PUBLIC_CALLER
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_token(scope)
            if token is None:
                raise Unauthorized(MISSING)
            principal = await self.authenticator.principal(token)
            if permission is not None and principal.role not in ROLES_WITH[permission]:
                raise Forbidden(
                    f"role {principal.role} may not do this ({permission}); "
                    f"roles that may: {names(ROLES_WITH[permission])}"
                )
        except EngineError as error:
            await refusal(error)(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` a proxy mounts the API under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
