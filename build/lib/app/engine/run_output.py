"""A completed run's output, as GET /flow shows it and a parent run receives it."""

from __future__ import annotations

import orjson

from app.engine.params import resolve
from app.engine.snapshot import RunSnapshot
from app.jsontypes import JSON, JSONObject


def run_output(snapshot: RunSnapshot, template: JSON, document: JSONObject | None = None) -> JSON:
    """The output a terminate action gave the run; else the workflow's ``output`` template
    (``template``, None when it has none) resolved on the data document (``document`` when
    the caller has it); else the document."""
    given = snapshot.fields.get("output")
    if given is not None:
        return orjson.loads(given)
    document = snapshot.document() if document is None else document
    return document if template is None else resolve(template, document).value
