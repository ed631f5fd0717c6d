"""Parameter resolution edge cases: warnings from nested templates, paths that fail on the
data only, values orjson cannot copy, text beyond ASCII, the JSON text form. Pure: no Redis,
no server."""

from __future__ import annotations

from typing import Any

import orjson

from app.engine.params import resolve, resolve_json, stringify

BEYOND_64_BITS = 2**70
# Evaluates on the probe document (``nope`` is absent there), but a parent of the root does
# not exist: jsonpath-ng fails on data that holds ``nope``.
FAILS_ON_DATA = "$.nope.`parent`.`parent`"


def test_warnings_from_inside_objects_and_arrays_are_reported() -> None:
    template = {"a": {"b": "{$.input.x}"}, "c": ["{$.input.y}", {"d": "{$.input.z}"}]}

    resolution = resolve(template, {"input": {}})

    assert resolution.value == {"a": {"b": None}, "c": [None, {"d": None}]}
    assert resolution.warnings == [
        "path $.input.x found nothing",
        "path $.input.y found nothing",
        "path $.input.z found nothing",
    ]


def test_a_path_that_fails_on_the_data_is_null_with_a_warning() -> None:
    resolution = resolve({"v": "{" + FAILS_ON_DATA + "}"}, {"nope": {"a": 1}})

    assert resolution.value == {"v": None}
    assert resolution.warnings == [f"path {FAILS_ON_DATA} could not be evaluated: "]


def test_the_warning_of_a_failing_path_names_it_in_full_form() -> None:
    resolution = resolve("at {$2.`parent`.`parent`}", {"2": {"output": 1}})

    assert resolution.value == "at "
    assert resolution.warnings == ["path $.2.`parent`.`parent` could not be evaluated: "]


def test_a_value_orjson_cannot_write_is_still_copied_whole() -> None:
    found: dict[str, Any] = {"big": BEYOND_64_BITS, "nested": {"list": [1, 2]}}
    document: dict[str, Any] = {"input": found}

    value = resolve("{$.input}", document).value

    assert value == {"big": BEYOND_64_BITS, "nested": {"list": [1, 2]}}
    assert isinstance(value, dict)
    nested = value["nested"]
    assert isinstance(nested, dict)
    nested["list"].append(3)
    assert found["nested"]["list"] == [1, 2]


def test_text_keeps_characters_beyond_ascii() -> None:
    document: dict[str, Any] = {"input": {"who": {"name": "Zoë"}, "tags": ["né", "日本"]}}

    resolution = resolve("to {$.input.who} / {$.input.tags}", document)

    assert resolution.value == 'to {"name":"Zoë"} / ["né","日本"]'


def test_a_branch_key_keeps_characters_beyond_ascii() -> None:
    assert stringify({"é": "ü"}) == '{"é":"ü"}'


def test_resolve_json_answers_json_text_and_the_warnings() -> None:
    document_json = orjson.dumps({"input": {"a": [1, {"b": "c"}], "n": 2.5}}).decode()

    value_json, warnings = resolve_json(
        {"x": "{$.input.a[1]}", "n": "{$.input.n}", "m": "{$.input.m}"}, document_json
    )

    assert orjson.loads(value_json) == {"x": {"b": "c"}, "n": 2.5, "m": None}
    assert value_json == '{"x":{"b":"c"},"n":2.5,"m":null}'
    assert warnings == ["path $.input.m found nothing"]
