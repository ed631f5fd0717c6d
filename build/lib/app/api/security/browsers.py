"""What a web page may do with this server through its visitor's browser: nothing, unless its
origin is allowed.

A browser sends a "simple" request (a ``text/plain`` POST, say) to any server without asking
first, and this API reads every body as JSON: a page on any site could register definitions
and terminate runs through the browser of someone who can reach the server. So, before
anything else runs (authentication, the body's reading, the routes):

- A request whose ``Origin`` is neither in ``ORCHY_ALLOWED_ORIGINS`` nor the server's own
  origin is refused (403), its body unread. Browsers send ``Origin`` on every request that
  can change something (every method but GET and HEAD, and every ``fetch`` across origins);
  clients that are not browsers (curl, the workers, the SDK) send none, and pass.
- A request marked ``Sec-Fetch-Site: cross-site`` without ``Origin`` is a page's image,
  script or ``no-cors`` GET: refused too. Following a link (a top-level navigation) passes.
- CORS: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
  origin is answered 204 with the methods and headers of the API (``Authorization``,
  ``Content-Type``); from any other origin 403. The answers to allowed origins carry
  ``Access-Control-Allow-Origin``; no other answer carries any ``Access-Control-*`` header.
- DNS rebinding: a page whose name the attacker points at 127.0.0.1 is same-origin with a
  server on loopback. A server bound to loopback (and any server given
  ``ORCHY_ALLOWED_HOSTS``) answers only a ``Host`` that is a loopback name (``localhost``,
  ``127.0.0.1``, ``[::1]``, any port) or listed in ``ORCHY_ALLOWED_HOSTS``.

The server's own origin is ``scheme://Host`` when that host cannot be a rebound name: an IP
address, ``localhost``, or a listed host (so a page the server itself serves may call it).

A request without ``Origin`` (the workers' fast path) costs one pass over its headers, and on
a server that checks ``Host`` one set lookup once its host has been seen."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.api.security.loopback import is_ip_literal, is_loopback_bind, is_loopback_name, split_host
from app.settings import Settings

FORBIDDEN = 403
NO_CONTENT = 204
ORIGINS_VARIABLE = "ORCHY_ALLOWED_ORIGINS"
HOSTS_VARIABLE = "ORCHY_ALLOWED_HOSTS"
ANY_HOST = "*"
ALLOWED_METHODS = b"GET, POST, OPTIONS"
ALLOWED_HEADERS = b"Authorization, Content-Type"
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
# Hosts seen valid are remembered, so that the next request from the same client is one set
# lookup; past this many the set is not grown (a client cycling names costs a parse each).
ACCEPTED_HOSTS_MOST = 64
# The most characters of a refused Origin or Host the answer repeats.
SHOWN_MOST = 200
# Sec-Fetch-* values (https://www.w3.org/TR/fetch-metadata/).
CROSS_SITE = b"cross-site"
NAVIGATE = b"navigate"
SAFE_METHODS = frozenset(("GET", "HEAD"))
# A close code of a refused WebSocket (policy violation).
WEBSOCKET_POLICY = 1008


class BadOrigin(ValueError):
    """An entry of ORCHY_ALLOWED_ORIGINS that is not ``scheme://host[:port]``."""


def normal_origin(text: str) -> str:
    """``scheme://host[:port]`` in lowercase, without the scheme's default port: the way a
    browser writes the ``Origin`` header. BadOrigin when ``text`` has anything else."""
    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        raise BadOrigin(f"{text!r}: the port is not a number") from None
    if not parts.scheme or not parts.hostname or parts.username or parts.password is not None:
        raise BadOrigin(f"{text!r}: expected scheme://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadOrigin(f"{text!r}: an origin has no path, query or fragment")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = "" if port is None or str(port) == DEFAULT_PORTS.get(parts.scheme) else port
    return f"{parts.scheme}://{host}" + (f":{shown_port}" if shown_port != "" else "")


def allowed_origins(setting: str) -> frozenset[str]:
    """The origins of ``ORCHY_ALLOWED_ORIGINS`` (comma separated), normalized."""
    origins = set()
    for entry in setting.split(","):
        if entry.strip():
            try:
                origins.add(normal_origin(entry))
            except BadOrigin as error:
                raise BadOrigin(f"{ORIGINS_VARIABLE}: {error}") from None
    return frozenset(origins)


def _shown(value: str) -> str:
    return value if len(value) <= SHOWN_MOST else f"{value[:SHOWN_MOST]}..."


@dataclass(frozen=True)
class HostRule:
    """Which ``Host`` headers a server answers: loopback names and the listed hosts (a listed
    ``name`` at any port, ``name:port`` at that port)."""

    names: frozenset[str]
    hosts: frozenset[str]

    @classmethod
    def of(cls, setting: str) -> HostRule:
        entries = [entry.strip().lower() for entry in setting.split(",") if entry.strip()]
        names = {entry for entry in entries if not split_host(entry)[1]}
        return cls(
            frozenset(name.strip("[]") for name in names), frozenset(entries) - frozenset(names)
        )

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (a Host header) names this server for sure."""
        hostname, _ = split_host(host)
        return is_loopback_name(hostname) or hostname in self.names or host.lower() in self.hosts


class BrowserGuard:
    """The outermost middleware: see the module's docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.origins = allowed_origins(settings.allowed_origins)
        self.host_rule = HostRule.of(settings.allowed_hosts)
        listed_any = ANY_HOST in self.host_rule.names
        self.check_host = not listed_any and (
            is_loopback_bind(settings.host) or bool(settings.allowed_hosts.strip())
        )
        self.accepted_hosts: set[bytes] = set()
        self.max_age = str(settings.cors_max_age_seconds).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        # One pass, in C (a header a browser would not send twice: the last one counts).
        headers: dict[bytes, bytes] = dict(scope["headers"])
        origin = headers.get(b"origin")
        host = headers.get(b"host")
        if self.check_host and host is not None and host not in self.accepted_hosts:
            refusal = self.host_refusal(host.decode("latin-1"))
            if refusal is not None:
                await self.refuse(refusal, scope, receive, send)
                return
            if len(self.accepted_hosts) < ACCEPTED_HOSTS_MOST:
                self.accepted_hosts.add(host)
        if origin is None:
            if headers.get(b"sec-fetch-site") == CROSS_SITE and not (
                headers.get(b"sec-fetch-mode") == NAVIGATE
                and scope.get("method", "GET") in SAFE_METHODS
            ):
                message = (
                    "a request from a page of another site is refused "
                    "(Sec-Fetch-Site: cross-site without an Origin)"
                )
                await self.refuse(message, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        origin_text = origin.decode("latin-1")
        if not self.allows(origin_text, scope, host):
            await self.refuse(self.origin_refusal(origin_text), scope, receive, send)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self.answer_preflight(origin, send)
            return
        await self.app(scope, receive, self.with_cors(origin, send))

    def allows(self, origin: str, scope: Scope, host: bytes | None) -> bool:
        if origin in self.origins:
            return True
        try:
            normal = normal_origin(origin)
        except BadOrigin:
            return False  # "null" (a sandboxed page, a file), or anything else
        if normal in self.origins:
            return True
        if host is None:
            return False
        own_host = host.decode("latin-1")
        if not self.is_own_name(own_host):
            return False
        scheme = "https" if scope["scheme"] in ("https", "wss") else "http"
        try:
            return normal == normal_origin(f"{scheme}://{own_host}")
        except BadOrigin:
            return False

    def is_own_name(self, host: str) -> bool:
        """A Host that cannot be a name rebound to this server: an IP address, a loopback
        name, or a listed host."""
        return is_ip_literal(split_host(host)[0]) or self.host_rule.trusts(host)

    def host_refusal(self, host: str) -> str | None:
        if self.host_rule.trusts(host):
            return None
        return (
            f"Host {_shown(host)!r} is not a name of this server: a server bound to loopback "
            f"answers only localhost, 127.0.0.1 and [::1] (a page whose name was pointed at "
            f"this machine is refused); to answer another name, list it in {HOSTS_VARIABLE}"
        )

    @staticmethod
    def origin_refusal(origin: str) -> str:
        return (
            f"origin {_shown(origin)!r} may not call this server: requests from web pages "
            f"are refused unless their origin is listed in {ORIGINS_VARIABLE} "
            f"(comma separated scheme://host[:port])"
        )

    async def refuse(self, message: str, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY, "reason": ""})
            return
        await error_response(FORBIDDEN, message)(scope, receive, send)

    async def answer_preflight(self, origin: bytes, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", self.max_age),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": NO_CONTENT, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    def with_cors(origin: bytes, send: Send) -> Send:
        """``send``, adding to the answer's head the CORS headers of an allowed origin."""

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_cors
