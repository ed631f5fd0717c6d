"""wait: park until an event with this name is sent to the run, or until the timeout.

With a ``correlationKey``, the wait is also reached by ``POST /events/{event}`` naming that
key, with no run id (app/engine/correlation.py): the key is resolved when the wait is
reached, and a wait whose key resolves to nothing fails."""

from __future__ import annotations

import orjson

from app.actions.base import AwaitEvent, Fail, Outcome, SystemAction
from app.actions.delay import is_number
from app.definition import ActionDef, DefinitionError
from app.engine.params import PathError, compile_path, references, resolve, stringify
from app.jsontypes import JSON, JSONObject

# An event is sent as the last segment of POST /flow/{id}/events/{event}: it cannot hold a
# "/", clients resolve "." and ".." away, and control characters do not survive in a URL.
UNSENDABLE_EVENTS = {".", ".."}
URL_CONTROL = {chr(code) for code in range(0x20)} | {"\x7f"}
# A key that resolved to something unusable is shown in the wait's error up to this long.
SHOWN_KEY_CHARS = 200


def is_sendable(event: str) -> bool:
    """True when ``POST /flow/{id}/events/{event}`` can send ``event``."""
    return "/" not in event and event not in UNSENDABLE_EVENTS and URL_CONTROL.isdisjoint(event)


def correlation_key_of(value: JSON) -> str | None:
    """The key a resolved ``correlationKey`` names: a string as it is, a number or a boolean
    as its text; None for null, "", an object or a list."""
    if value is None or isinstance(value, dict | list):
        return None
    key = stringify(value)
    return key or None


class WaitAction(SystemAction):
    name = "wait"
    reads_document = False

    def reads_document_of(self, action: ActionDef) -> bool:
        return action.correlation_key is not None and any(references(action.correlation_key))

    def validate(self, action: ActionDef) -> None:
        if not isinstance(action.event, str) or not action.event.strip():
            raise DefinitionError(f"{action.label}: wait needs an event name")
        timeout = action.timeout_seconds
        if timeout is not None and (not is_number(timeout) or timeout <= 0):
            raise DefinitionError(
                f"{action.label}: timeoutSeconds must be a number > 0, not {timeout!r}"
            )
        key = action.correlation_key
        if key is None:
            return
        if not isinstance(key, str) or not key.strip():
            raise DefinitionError(
                f"{action.label}: correlationKey must be a non-empty string (a reference "
                f"such as {{$.input.orderId}} or a literal), not {key!r}"
            )
        for ref in references(key):
            try:
                compile_path(ref)
            except PathError as error:
                raise DefinitionError(f"{action.label}: correlationKey: {error}") from None

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        timeout = action.timeout_seconds
        received: JSONObject = {"event": action.event, "timeoutSeconds": timeout}
        key: str | None = None
        if action.correlation_key is not None:
            resolved = resolve(action.correlation_key, document).value
            key = correlation_key_of(resolved)
            received["correlationKey"] = resolved
            if key is None:
                shown = orjson.dumps(resolved).decode()[:SHOWN_KEY_CHARS]
                return Fail(
                    f"correlationKey {action.correlation_key!r} resolved to {shown}: "
                    "a correlated wait needs a non-empty string or number as its key",
                    input=received,
                )
        return AwaitEvent(
            event=action.event or "",
            timeout_seconds=None if timeout is None else float(timeout),
            input=received,
            correlation_key=key,
        )
