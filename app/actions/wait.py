"""wait: park until an event with this name is sent to the run, or until the timeout."""

from __future__ import annotations

from app.actions.base import AwaitEvent, Outcome, SystemAction
from app.actions.delay import is_number
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSONObject

# An event is sent as the last segment of POST /flow/{id}/events/{event}: it cannot hold a
# "/", clients resolve "." and ".." away, and control characters do not survive in a URL.
UNSENDABLE_EVENTS = {".", ".."}
URL_CONTROL = {chr(code) for code in range(0x20)} | {"\x7f"}


def is_sendable(event: str) -> bool:
    """True when ``POST /flow/{id}/events/{event}`` can send ``event``."""
    return "/" not in event and event not in UNSENDABLE_EVENTS and URL_CONTROL.isdisjoint(event)


class WaitAction(SystemAction):
    name = "wait"
    reads_document = False

    def validate(self, action: ActionDef) -> None:
        if not isinstance(action.event, str) or not action.event.strip():
            raise DefinitionError(f"{action.label}: wait needs an event name")
        timeout = action.timeout_seconds
        if timeout is not None and (not is_number(timeout) or timeout <= 0):
            raise DefinitionError(
                f"{action.label}: timeoutSeconds must be a number > 0, not {timeout!r}"
            )

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        timeout = action.timeout_seconds
        return AwaitEvent(
            event=action.event or "",
            timeout_seconds=None if timeout is None else float(timeout),
            input={"event": action.event, "timeoutSeconds": timeout},
        )
