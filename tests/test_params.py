"""Parameter resolution: SPEC section 2."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.definition import ActionDef, ActionType
from app.engine.document import Document
from app.engine.params import (
    REFERENCE,
    PathError,
    compile_path,
    normalize_path,
    references,
    resolve,
    stringify,
)


def make_document() -> dict[str, Any]:
    return {
        "input": {"userId": 1234, "name": "Ada", "tags": ["a", "b"], "vip": True, "none": None},
        "1": {"output": {"user": {"gender": "MALE", "age": 25}, "score": 2.5}},
        "2": {"output": {"discount": 20}},
        "flow": {"id": "f-1", "name": "demo", "version": 1},
    }


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{$.input.userId}", 1234),
        ("{$.1.output.user}", {"gender": "MALE", "age": 25}),
        ("{$.input.tags}", ["a", "b"]),
        ("{$.input.vip}", True),
        ("{$.1.output.score}", 2.5),
        ("{$.input.tags[1]}", "b"),
    ],
)
def test_a_whole_reference_keeps_the_type_of_the_value_found(template: str, expected: Any) -> None:
    resolution = resolve(template, make_document())

    assert resolution.value == expected
    assert type(resolution.value) is type(expected)
    assert resolution.warnings == []


def test_a_whole_reference_to_a_null_value_is_found_without_warning() -> None:
    resolution = resolve("{$.input.none}", make_document())

    assert resolution.value is None
    assert resolution.warnings == []


def test_a_whole_reference_that_finds_nothing_is_null_with_a_warning() -> None:
    resolution = resolve("{$.input.missing}", make_document())

    assert resolution.value is None
    assert resolution.warnings == ["path $.input.missing found nothing"]


def test_references_inside_text_become_text() -> None:
    resolution = resolve("Hi {$.input.name}, {$.2.output.discount} %", make_document())

    assert resolution.value == "Hi Ada, 20 %"
    assert resolution.warnings == []


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("user={$.1.output.user}", 'user={"gender":"MALE","age":25}'),
        ("tags={$.input.tags}", 'tags=["a","b"]'),
        ("vip={$.input.vip}", "vip=true"),
        ("score={$.1.output.score}", "score=2.5"),
        ("none=[{$.input.none}]", "none=[]"),
    ],
)
def test_text_writes_values_as_compact_json(template: str, expected: str) -> None:
    assert resolve(template, make_document()).value == expected


def test_a_missing_path_in_text_is_empty_with_a_warning() -> None:
    resolution = resolve("Hi {$.input.nickname}!", make_document())

    assert resolution.value == "Hi !"
    assert resolution.warnings == ["path $.input.nickname found nothing"]


def test_the_same_missing_path_is_warned_about_once() -> None:
    resolution = resolve(["{$.input.x}", "{$.input.x} and {$.input.y}"], make_document())

    assert resolution.warnings == [
        "path $.input.x found nothing",
        "path $.input.y found nothing",
    ]


def test_nested_objects_and_arrays_are_resolved_all_the_way_down() -> None:
    template = {
        "user": {"id": "{$.input.userId}", "labels": ["{$.input.name}", "x-{$.input.tags[0]}"]},
        "matrix": [[{"age": "{$.1.output.user.age}"}]],
        "constant": 7,
        "flag": False,
        "nothing": None,
        "plain": "no reference here",
    }

    resolution = resolve(template, make_document())

    assert resolution.value == {
        "user": {"id": 1234, "labels": ["Ada", "x-a"]},
        "matrix": [[{"age": 25}]],
        "constant": 7,
        "flag": False,
        "nothing": None,
        "plain": "no reference here",
    }


@pytest.mark.parametrize("template", [42, 2.5, True, None, "plain text", "{not a reference}"])
def test_values_without_references_are_unchanged(template: Any) -> None:
    resolution = resolve(template, make_document())

    assert resolution.value == template
    assert resolution.warnings == []


def test_orchy_shorthand_reads_an_action_output() -> None:
    document = make_document()

    assert resolve("{$1.output.user.gender}", document).value == "MALE"
    assert resolve("discount {$2.output.discount}", document).value == "discount 20"


def test_normalize_path_rewrites_only_the_shorthand() -> None:
    assert normalize_path("$1.output.x") == "$.1.output.x"
    assert normalize_path("$12.output") == "$.12.output"
    assert normalize_path("$.1.output.x") == "$.1.output.x"
    assert normalize_path("$.input.a1") == "$.input.a1"


def test_a_resolved_value_is_a_copy_of_the_document() -> None:
    document = make_document()

    user = resolve("{$.1.output.user}", document).value
    user["age"] = 99

    assert document["1"]["output"]["user"]["age"] == 25


def test_compile_path_is_cached_and_accepts_the_shorthand() -> None:
    assert compile_path("$.input.userId") is compile_path("$.input.userId")
    assert compile_path("$1.output").find(make_document())[0].value == {
        "user": {"gender": "MALE", "age": 25},
        "score": 2.5,
    }


@pytest.mark.parametrize("path", ["$.input[", "$.a b", "$.input.#x", "$."])
def test_compile_path_names_a_path_that_does_not_parse(path: str) -> None:
    with pytest.raises(PathError, match=r"JSONPath \$\."):
        compile_path(path)


def test_resolve_raises_for_a_path_that_does_not_parse() -> None:
    with pytest.raises(PathError):
        resolve("{$.input[}", make_document())


def test_references_finds_every_reference_in_nested_strings() -> None:
    template = {"a": "{$.input.x} and {$1.output}", "b": [1, {"c": "{$.flow.id}"}], "d": None}

    assert list(references(template)) == ["$.input.x", "$1.output", "$.flow.id"]


def test_reference_pattern_captures_the_path_without_braces() -> None:
    assert [m.group(1) for m in REFERENCE.finditer('x {$.a.b} {"k": {$.c}}')] == ["$.a.b", "$.c"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("MALE", "MALE"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (42, "42"),
        (42.0, "42"),
        (2.5, "2.5"),
        (-3, "-3"),
        ({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}'),
        ([1, "x"], '[1,"x"]'),
    ],
)
def test_stringify_gives_the_branch_key(value: Any, expected: str) -> None:
    assert stringify(value) == expected


def test_the_document_is_built_only_when_read_with_outputs_set_before_and_after() -> None:
    builds: list[int] = []

    def build() -> dict[str, Any]:
        builds.append(1)
        return {"input": {}, "1": {"output": "kept"}, "2": {"output": "old"}}

    document = Document(build, dict)
    document.set_output(2, "new", '"new"')
    document.set_output(3, {"error": "boom"}, '{"error":"boom"}')
    assert builds == []
    assert document.value == {
        "input": {},
        "1": {"output": "kept"},
        "2": {"output": "new"},
        "3": {"output": {"error": "boom"}},
    }
    document.set_output(4, 1, "1")
    assert document.value["4"] == {"output": 1}
    assert builds == [1]


def test_the_document_as_json_text_and_its_size_without_parsing() -> None:
    def build() -> dict[str, Any]:
        raise AssertionError("the document is not parsed for its text or its size")

    def texts() -> dict[str, str]:
        return {"input": '{"a":[1,2]}', "1": '{"output":"kept"}', "2": '{"output":"old"}'}

    document = Document(build, texts)
    document.set_output(2, "new", '"new"')
    assert document.size() == len(document.json())
    # Kept up to date once known: outputs replaced (stored, and set before), and added.
    document.set_output(1, [1, 2], "[1,2]")
    document.set_output(2, "newer", '"newer"')
    document.set_output(12, None, "null")
    text = document.json()
    assert document.size() == len(text)
    assert orjson.loads(text) == {
        "input": {"a": [1, 2]},
        "1": {"output": [1, 2]},
        "2": {"output": "newer"},
        "12": {"output": None},
    }


@pytest.mark.parametrize(
    ("parameters", "references_data"),
    [
        ({}, False),
        ({"a": 1, "b": ["x", {"c": "plain $ text {} {$"}]}, False),
        ({"a": "{$.input.x}"}, True),
        ({"a": [{"b": "id {$1.output.id} now"}]}, True),
    ],
)
def test_an_action_knows_whether_its_parameters_reference_data(
    parameters: dict[str, Any], references_data: bool
) -> None:
    action = ActionDef(1, ActionType.USER, "step", parameters)
    assert action.references_data is references_data
