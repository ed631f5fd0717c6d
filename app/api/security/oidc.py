"""OAuth/OIDC access tokens: JWTs signed by the issuer (``ORCHY_OIDC_ISSUER``) for this server
(``ORCHY_OIDC_AUDIENCE``), checked with PyJWT against the issuer's keys (``jwks.Jwks``). The
role, tenant and action names come from the claims ``ORCHY_OIDC_ROLE_CLAIM``,
``ORCHY_OIDC_TENANT_CLAIM`` and ``ORCHY_OIDC_ACTIONS_CLAIM``; a claim name with dots that is
not itself a claim is a path into nested claims (``realm_access.roles``).

A verified token's principal is kept until the token expires, so that a worker polling with
the same token pays the signature check once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from app.api.security.jwks import ACCEPTED_ALGORITHMS, Jwks
from app.api.security.principal import Principal, Role
from app.api.security.refusals import Forbidden, Unauthorized, names
from app.api.security.settings_errors import AuthSettingsError
from app.settings import Settings
from app.store.keys import NAMESPACE_RULE, is_namespace

REQUIRED_CLAIMS = ["exp", "iss", "aud"]
# Claims naming the caller, most telling first (``sub`` of a user, the client of a
# client-credentials token).
NAME_CLAIMS = ("sub", "client_id", "azp")
ROLE_NAMES = frozenset(role.value for role in Role)


class OidcSettingsError(AuthSettingsError):
    """OIDC is half configured."""


@dataclass(frozen=True)
class ClaimNames:
    role: str
    tenant: str
    actions: str


@dataclass
class OidcVerifier:
    issuer: str
    audience: str
    jwks: Jwks
    claims: ClaimNames
    leeway_seconds: float
    cache_size: int
    clock: Callable[[], float] = time.time
    _verified: dict[str, tuple[Principal, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier of the ``ORCHY_OIDC_*`` settings; None without an issuer."""
        if not settings.oidc_issuer:
            if settings.oidc_audience or settings.oidc_jwks_url:
                raise OidcSettingsError("ORCHY_OIDC_AUDIENCE/JWKS_URL need ORCHY_OIDC_ISSUER")
            return None
        if not settings.oidc_audience:
            raise OidcSettingsError(
                "ORCHY_OIDC_ISSUER needs ORCHY_OIDC_AUDIENCE: the audience tokens for this "
                "server carry (otherwise a token the issuer made for any other service would do)"
            )
        jwks = Jwks(
            issuer=settings.oidc_issuer,
            jwks_url=settings.oidc_jwks_url,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            refresh_min_seconds=settings.oidc_jwks_refresh_min_seconds,
            timeout_seconds=settings.oidc_fetch_timeout_seconds,
        )
        claims = ClaimNames(
            settings.oidc_role_claim, settings.oidc_tenant_claim, settings.oidc_actions_claim
        )
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks=jwks,
            claims=claims,
            leeway_seconds=settings.oidc_leeway_seconds,
            cache_size=settings.oidc_token_cache_size,
        )

    async def principal(self, token: str) -> Principal:
        """The caller ``token`` stands for; Unauthorized if it is not a valid token of the
        issuer for this server, Forbidden if its claims give no role (or a bad tenant)."""
        now = self.clock()
        cached = self._verified.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        claims = await self._verified_claims(token)
        principal = principal_of_claims(claims, self.claims)
        self._remember(token, principal, float(claims["exp"]) + self.leeway_seconds, now)
        return principal

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is neither an API key nor a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:
            raise Unauthorized(
                f"the token's signing algorithm is not accepted (accepted: "
                f"{names(ACCEPTED_ALGORITHMS)})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("the token's kid is not a string")
        key = await self.jwks.key(kid)
        if key is None:
            raise Unauthorized("the token is signed with a key the issuer does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(_why(error)) from None
        return claims

    def _remember(self, token: str, principal: Principal, until: float, now: float) -> None:
        if len(self._verified) >= self.cache_size:
            self._verified = {t: kept for t, kept in self._verified.items() if kept[1] > now}
            if len(self._verified) >= self.cache_size:
                self._verified.clear()
        self._verified[token] = (principal, until)


def _why(error: jwt.PyJWTError) -> str:
    """What is wrong with a token, in words that never quote it."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf/iat)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token is from another issuer (iss)"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is not meant for this server (aud)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature is not valid"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "the token's signing algorithm does not match its key"
    return "the token is not a valid JWT"


def claim(claims: dict[str, Any], name: str) -> Any:
    """The claim ``name``, or the nested claim at the dotted path ``name``; None if absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def principal_of_claims(claims: dict[str, Any], names_of: ClaimNames) -> Principal:
    name = next((str(claims[key]) for key in NAME_CLAIMS if claims.get(key)), "unnamed")
    return Principal(
        name=name,
        role=_role(claim(claims, names_of.role), names_of.role),
        tenant=_tenant(claim(claims, names_of.tenant), names_of.tenant),
        actions=_actions(claim(claims, names_of.actions), names_of.actions),
    )


def _role(value: Any, name: str) -> Role:
    """A role name, or a list of names of which exactly one is an Orchy role (an issuer's
    list of roles usually holds others too)."""
    candidates = value if isinstance(value, list) else [value]
    roles = {Role(item) for item in candidates if isinstance(item, str) and item in ROLE_NAMES}
    if len(roles) == 1:
        [role] = roles
        return role
    every = names(Role)
    if value is None:
        raise Forbidden(f"the token has no {name} claim: it gives no role ({every})")
    if not roles:
        raise Forbidden(f"the token's {name} claim names no role ({every})")
    raise Forbidden(f"the token's {name} claim names several roles: {names(roles)}")


def _tenant(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_namespace(value):
        raise Forbidden(f"the token's {name} claim is not a tenant name ({NAMESPACE_RULE})")
    return value


def _actions(value: Any, name: str) -> frozenset[str] | None:
    """A list of action names, or one string of names separated by spaces or commas."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return frozenset(value)
    raise Forbidden(f"the token's {name} claim is not a list of action names")
