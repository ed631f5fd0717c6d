"""app/actions/for_each.py without Redis or a server: what a for-each expands to when it is
reached, its limits, and how its output is read back from a run's fields; and the planner's
"each" op (a large document expanded in the document processes)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from app.actions.base import Done, Fail, StartItems
from app.actions.for_each import ItemLimits, expand, failed_item, items_of, output_of
from app.definition import ActionDef
from app.engine.document import Document
from app.engine.document_pool import DocumentPool
from app.engine.planner import Planner
from app.engine.validate import parse_workflow


def for_each_action(**fields: Any) -> ActionDef:
    action = {
        "id": 4,
        "type": "system",
        "name": "forEach",
        "items": "{$.input.items}",
        "body": {"type": "user", "name": "work", "parameters": {"v": "{$.item}", "i": "{$.index}"}},
        **fields,
    }
    return parse_workflow({"name": "wf", "rootAction": 4, "actions": [action]}).actions[4]


def test_each_item_gets_its_parameters_resolved_with_item_and_index() -> None:
    outcome = expand(
        for_each_action(concurrency=3), {"input": {"items": ["a", {"b": 1}]}}, ItemLimits()
    )
    assert outcome == StartItems(
        queue="work",
        header="3 fail",
        lines=['0 {"v":"a","i":0}', '1 {"v":{"b":1},"i":1}'],
    )
    assert outcome.input == {
        "items": 2,
        "selected": 2,
        "concurrency": 3,
        "onItemFailure": "fail",
        "body": "work",
    }


def test_a_literal_list_a_filter_and_the_default_concurrency() -> None:
    action = for_each_action(items=[3, 12, 7, 40], filter="{$.item} > 5 && {$.index} != 3")
    outcome = expand(action, {"input": {}}, ItemLimits(default_concurrency=7))
    assert isinstance(outcome, StartItems)
    assert outcome.header == "7 fail"
    assert outcome.lines == ['1 {"v":12,"i":1}', '2 {"v":7,"i":2}']


def test_nothing_left_is_done_with_an_empty_list() -> None:
    outcome = expand(for_each_action(filter="false"), {"input": {"items": [1]}}, ItemLimits())
    assert outcome == Done(output=[])


def test_a_filter_that_cannot_be_evaluated_fails_naming_the_item() -> None:
    outcome = expand(
        for_each_action(filter="{$.item} + 1 > 2"), {"input": {"items": [1, "x"]}}, ItemLimits()
    )
    assert isinstance(outcome, Fail)
    assert "filter '{$.item} + 1 > 2' on item 1" in outcome.error


def test_the_limits_fail_the_for_each_naming_their_setting() -> None:
    action = for_each_action()
    document = {"input": {"items": list(range(5))}}
    too_many = expand(action, document, ItemLimits(max_items=4))
    assert isinstance(too_many, Fail) and "ORCHY_MAX_FOR_EACH_ITEMS" in too_many.error
    too_big = expand(action, document, ItemLimits(max_payload_bytes=40))
    assert isinstance(too_big, Fail) and "ORCHY_MAX_FOR_EACH_PAYLOAD_BYTES" in too_big.error


def test_paths_that_find_nothing_warn_a_few_times_only() -> None:
    action = for_each_action(
        body={"type": "user", "name": "work", "parameters": {"x": "{$.item.missing}"}}
    )
    outcome = expand(action, {"input": {"items": [{}] * 50}}, ItemLimits())
    assert isinstance(outcome, StartItems)
    assert outcome.warnings == ["path $.item.missing found nothing"]


def test_the_output_is_read_back_in_the_items_order() -> None:
    fields = {
        "x:5:p": "2",
        "x:5:i": "7",
        "x:5:s": "COMPLETED",
        "x:5:o": '{"r":7}',
        "x:3:p": "2",
        "x:3:i": "1",
        "x:3:s": "FAILED",
        "x:3:o": '{"error":"boom"}',
        "x:3:e": "boom",
        "x:4:p": "9",  # another for-each's item
        "x:4:i": "0",
        "x:4:s": "COMPLETED",
        "x:2:ff": "3",
    }
    assert output_of(items_of(fields, 2)) == [{"error": "boom"}, {"r": 7}]
    assert failed_item(fields, 2) == "item 1 failed: boom"
    assert failed_item(fields, 9) is None


@pytest.fixture(scope="module")
def planner() -> Iterator[Planner]:
    documents = DocumentPool(processes=1)
    with ThreadPoolExecutor(1) as executor:
        yield Planner(executor, documents, large_document_size=200, item_limits=ItemLimits())
    documents.close()


@pytest.mark.parametrize("count", [3, 100], ids=["small-document", "large-document"])
async def test_the_planner_sends_every_item_in_one_each_op(planner: Planner, count: int) -> None:
    workflow = parse_workflow(
        {
            "name": "wf",
            "rootAction": 1,
            "actions": [
                {
                    "id": 1,
                    "type": "system",
                    "name": "forEach",
                    "items": "{$.input.items}",
                    "concurrency": 2,
                    "onItemFailure": "collect",
                    "body": {"type": "user", "name": "work", "parameters": {"n": "{$.item}"}},
                }
            ],
        }
    )
    document = Document.of({"input": {"items": list(range(count))}, "flow": {}})
    plan = await planner.start(workflow, [1], document)
    [op] = plan.ops
    assert (op.kind, op.action_id, op.name, op.queue) == ("each", 1, "work", "work")
    header, *lines = op.payload.split("\n")
    assert header == "2 collect"
    assert lines == [f'{n} {{"n":{n}}}' for n in range(count)]
    assert orjson.loads(op.input)["selected"] == count
