"""A run's data document (SPEC section 2), built on its first read: the successors of most
steps reference nothing, and building it parses every output the run has kept.

A document can also be had as JSON text, put together from what Redis holds without
parsing it, and it knows its size without being built: a large one is read in another
process (see :mod:`app.engine.document_pool`)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from app.engine.snapshot import RunSnapshot
from app.engine.variables import VARS
from app.jsontypes import JSON, JSONObject


def _dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


class Document:
    def __init__(
        self, build: Callable[[], JSONObject], texts: Callable[[], dict[str, str]]
    ) -> None:
        """``build`` parses the document; ``texts`` gives the JSON text of each of its
        top-level entries, without parsing anything."""
        self._build: Callable[[], JSONObject] | None = build
        self._texts = texts
        # Until the build: the outputs set so far. After it: the whole document.
        self._value: JSONObject = {}
        self._stored: dict[str, str] | None = None  # ``texts()``, once asked
        self._set_texts: dict[str, str] = {}  # the JSON of the entries set since
        self._size: int | None = None  # ``size()``, once asked, kept up to date

    @classmethod
    def of(cls, value: JSONObject) -> Document:
        """A document already built."""
        return cls(lambda: value, lambda: {key: _dumps(item) for key, item in value.items()})

    @classmethod
    def of_run(cls, snapshot: RunSnapshot) -> Document:
        return cls(snapshot.document, lambda: stored_texts(snapshot))

    def set_output(self, action_id: int, output: JSON, output_json: str) -> None:
        """Sets an action's output; ``output_json`` is its JSON text."""
        key = str(action_id)
        self._value[key] = {"output": output}
        text = f'{{"output":{output_json}}}'
        if self._size is not None:  # kept up to date: an entry replaced, or one more
            replaced = self._set_texts.get(key) or (self._stored or {}).get(key)
            self._size += len(text) - (-len(key) - 4 if replaced is None else len(replaced))
        self._set_texts[key] = text

    def set_vars(self, changed: JSONObject) -> None:
        """Sets workflow variables (``$.vars``)."""
        if VARS not in self._value:  # not built yet, or a document without variables
            self._value[VARS] = self._stored_vars()
        variables = self._value[VARS]
        assert isinstance(variables, dict)
        variables.update(changed)
        self._set_texts[VARS] = _dumps(variables)
        self._size = None

    def _stored_vars(self) -> JSONObject:
        text = self._entries().get(VARS)
        parsed = orjson.loads(text) if text else {}
        return parsed if isinstance(parsed, dict) else {}

    @property
    def value(self) -> JSONObject:
        if self._build is not None:
            built = self._build()
            built.update(self._value)
            self._value, self._build = built, None
        return self._value

    def _entries(self) -> dict[str, str]:
        if self._stored is None:
            self._stored = self._texts()
        return {**self._stored, **self._set_texts}

    def size(self) -> int:
        """The length of :meth:`json`, without writing it (its keys need no escapes)."""
        if self._size is None:
            entries = self._entries()
            # '"key":text' for each entry, commas between them, braces around them.
            separators = max(len(entries) - 1, 0) + 2
            self._size = sum(len(key) + len(text) + 3 for key, text in entries.items())
            self._size += separators
        return self._size

    def json(self) -> str:
        """The document as JSON text."""
        entries = self._entries()
        return "{" + ",".join(f"{_dumps(key)}:{text}" for key, text in entries.items()) + "}"


def stored_texts(snapshot: RunSnapshot) -> dict[str, str]:
    """The JSON text of each entry of a run's document, as Redis holds it (see
    ``RunSnapshot.document``, which parses the same)."""
    flow = {"id": snapshot.flow_id, "name": snapshot.name, "version": snapshot.version}
    texts = {"input": snapshot.fields["input"], "flow": _dumps(flow)}
    variables = snapshot.var_texts()
    if variables:  # as ``RunSnapshot.document``
        entries = ",".join(f"{_dumps(name)}:{raw}" for name, raw in variables.items())
        texts[VARS] = "{" + entries + "}"
    for action_id, raw in snapshot.output_texts():
        texts[str(action_id)] = f'{{"output":{raw}}}'
    return texts
