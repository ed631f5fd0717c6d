"""A run's data document (SPEC section 2), built on its first read: the successors of most
steps reference nothing, and building it parses every output the run has kept."""

from __future__ import annotations

from collections.abc import Callable

from app.jsontypes import JSON, JSONObject


class Document:
    def __init__(self, build: Callable[[], JSONObject]) -> None:
        self._build: Callable[[], JSONObject] | None = build
        # Until the build: the outputs set so far. After it: the whole document.
        self._value: JSONObject = {}

    @classmethod
    def of(cls, value: JSONObject) -> Document:
        return cls(lambda: value)

    def set_output(self, action_id: int, output: JSON) -> None:
        self._value[str(action_id)] = {"output": output}

    @property
    def value(self) -> JSONObject:
        if self._build is not None:
            built = self._build()
            built.update(self._value)
            self._value, self._build = built, None
        return self._value
