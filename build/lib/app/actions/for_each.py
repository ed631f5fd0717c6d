"""forEach: run a body once per item of a list, at most ``concurrency`` items at a time, and
continue with the list of the items' outputs, in the items' order.

```json
{"id": 2, "type": "system", "name": "forEach", "items": "{$.input.orders}",
 "concurrency": 5, "onItemFailure": "fail", "filter": "{$.item.amount} > 10",
 "body": {"type": "user", "name": "charge-card",
          "parameters": {"order": "{$.item}", "position": "{$.index}"}},
 "next": {"default": [3], "error": [9]}}
```

When the for-each is reached, its list is read, filtered, and the body's parameters are
resolved for every item at once (``$.item`` and ``$.index``, the item's position in the list,
added to the run's document): the planner sends them all in one "each" op, and common.lua
keeps the items not started yet in the run, starting the next one as each item ends. Items
are executions of the for-each action (``x:<seq>:p``, ``x:<seq>:i``) queued under the
body's action name, with that action's retry settings, and never its latest execution: the
for-each's own status (WAITING while its items run) is what ``a:<id>:*`` shows. The
for-each ends through a "step" timer, as a join does, and ``Engine._finish_waiting`` builds
its output with :func:`output_of`.

The item payloads are resolved here and not in Lua. A sub-workflow body,
``{"workflow": "ship-order", "version": 2, "input": {...}}`` (:class:`SubflowBody`), is
planned into the same lines, each payload the request of a child run
(``sub_workflow.child_request``), in a "subeach" op: each item is then a sub-workflow
execution, started by its spawn timer and ended by its "istep" timer when its child ends
(app/engine/children.py), with the same "item" op as a user body's items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.actions.base import Done, Fail, Outcome, StartItems, SystemAction
from app.actions.sub_workflow import child_request, is_version
from app.actions.switch import check_condition
from app.definition import (
    DEFAULT_BRANCH,
    ERROR_BRANCH,
    ActionDef,
    DefinitionError,
    ForEachSpec,
    ItemBody,
    ItemFailure,
    SubflowBody,
)
from app.engine.conditions import (
    ConditionError,
    ConditionSyntaxError,
    compile_condition,
    type_name,
)
from app.engine.params import REFERENCE, PathError, compile_path, references, resolve
from app.jsontypes import JSON, JSONObject

NAME = "forEach"
ITEM = "item"  # $.item: the item, in the filter and the body's parameters
INDEX = "index"  # $.index: its position in the list (before filtering)
_FIELDS = ("items", "concurrency", "onItemFailure", "filter", "body")
_BODY_FIELDS = ("type", "name", "parameters")
_SUBFLOW_FIELDS = ("workflow", "version", "input")
_BRANCHES = (DEFAULT_BRANCH, ERROR_BRANCH)
_MODES = ", ".join(repr(mode.value) for mode in ItemFailure)
# Warnings (paths that found nothing) recorded per for-each: 10,000 items may each warn.
_MOST_WARNINGS = 10


@dataclass(frozen=True)
class ItemLimits:
    """What one for-each may start (ORCHY_FOR_EACH_*, ORCHY_MAX_FOR_EACH_*)."""

    default_concurrency: int = 10
    max_items: int = 100_000
    max_payload_bytes: int = 64 * 1024 * 1024


def parse(raw: dict[str, Any], label: str) -> ForEachSpec:
    """A forEach action's own fields; a :class:`DefinitionError` naming the action and the
    field when one is wrong."""
    items = raw.get("items")
    if isinstance(items, str):
        match = REFERENCE.fullmatch(items.strip())
        if match is None:
            raise DefinitionError(
                f'{label}: items must be one reference such as "{{$.input.items}}" or a '
                f"list, not {items!r}"
            )
        _check_path(f"{label}: items", match.group(1))
        items = items.strip()
    elif not isinstance(items, list):
        raise DefinitionError(
            f'{label}: forEach needs items, one reference such as "{{$.input.items}}" or a '
            f"list, not {items!r}"
        )
    concurrency = raw.get("concurrency")
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        raise DefinitionError(
            f"{label}: concurrency must be a positive integer, not {concurrency!r}"
        )
    mode = raw.get("onItemFailure", ItemFailure.FAIL.value)
    if not isinstance(mode, str) or mode not in set(ItemFailure):
        raise DefinitionError(f"{label}: onItemFailure must be one of {_MODES}, not {mode!r}")
    item_filter = raw.get("filter")
    if item_filter is not None:
        if not isinstance(item_filter, str):
            raise DefinitionError(
                f"{label}: filter must be a condition (a string), not {item_filter!r}"
            )
        check_condition(f"{label}: filter", item_filter)
    return ForEachSpec(
        items=items,
        concurrency=concurrency,
        on_item_failure=ItemFailure(mode),
        filter=item_filter,
        body=_parse_body(raw.get("body"), label),
    )


def _parse_body(raw: JSON, label: str) -> ItemBody | SubflowBody:
    where = f"{label}: body"
    if not isinstance(raw, dict):
        raise DefinitionError(
            f'{where} must be an object {{"type": "user", "name": ..., "parameters": ...}} '
            f'or {{"workflow": ..., "version": ..., "input": ...}}, not {raw!r}'
        )
    if any(field in raw for field in _SUBFLOW_FIELDS):
        return _parse_subflow_body(raw, where)
    unknown = sorted(set(raw) - set(_BODY_FIELDS))
    if unknown:
        raise DefinitionError(
            f"{where}: unknown field(s) {', '.join(unknown)}; a body has type, name and "
            "parameters (its retries are its action's definition, POST /metadata/action)"
        )
    if raw.get("type") != "user":
        raise DefinitionError(f'{where}.type must be "user", not {raw.get("type")!r}')
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{where}.name must be a non-empty string, not {name!r}")
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, dict):
        raise DefinitionError(f"{where}.parameters must be an object, not {parameters!r}")
    for ref in references(parameters):
        _check_path(f"{where}.parameters", ref)
    return ItemBody(name=name, parameters=parameters)


def _parse_subflow_body(raw: dict[str, Any], where: str) -> SubflowBody:
    """A sub-workflow body: ``{"workflow": ..., "version": ..., "input": ...}``."""
    mixed = sorted(set(raw) & set(_BODY_FIELDS))
    if mixed:
        given = ", ".join(field for field in _SUBFLOW_FIELDS if field in raw)
        raise DefinitionError(
            f"{where}: {', '.join(mixed)} cannot be given with {given}: a body is either a "
            'user action {"type": "user", "name", "parameters"} or a sub-workflow '
            '{"workflow", "version", "input"}'
        )
    unknown = sorted(set(raw) - set(_SUBFLOW_FIELDS))
    if unknown:
        raise DefinitionError(
            f"{where}: unknown field(s) {', '.join(unknown)}; a sub-workflow body has "
            "workflow, version and input"
        )
    workflow = raw.get("workflow")
    if not isinstance(workflow, str) or not workflow.strip():
        raise DefinitionError(
            f"{where}.workflow must be the name of a workflow (a non-blank string), "
            f"not {workflow!r}"
        )
    version = raw.get("version")
    if version is not None and not is_version(version):
        raise DefinitionError(
            f"{where}.version must be an integer >= 1 (a version of workflow {workflow!r}), "
            f"not {version!r}"
        )
    child_input = raw.get("input", {})
    for ref in references(child_input):
        _check_path(f"{where}.input", ref)
    return SubflowBody(workflow=workflow, version=version, input=child_input)


def _check_path(where: str, ref: str) -> None:
    try:
        compile_path(ref)
    except PathError as error:
        raise DefinitionError(f"{where}: {error}") from None


class ForEachAction(SystemAction):
    name = NAME

    def validate(self, action: ActionDef) -> None:
        if action.for_each is None:
            raise DefinitionError(f"{action.label}: forEach needs items and a body")
        for branch in action.next:
            if branch not in _BRANCHES:
                raise DefinitionError(
                    f"{action.label}: next.{branch} is not a branch of forEach "
                    f"({', '.join(_BRANCHES)})"
                )

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        return expand(action, document, ItemLimits())


def expand(action: ActionDef, document: JSONObject, limits: ItemLimits) -> Outcome:
    """The items to start, each as "<index> <payload JSON>"; ``Done([])`` when none is left
    after the filter; ``Fail`` when the list is not one, or breaks a limit."""
    spec = action.for_each
    if spec is None:
        return Fail(f"{action.label}: forEach needs items and a body")
    what = f"forEach {action.label}"
    listed: JSON = spec.items
    if isinstance(listed, str):
        listed = resolve(listed, document).value
    if not isinstance(listed, list):
        return Fail(f"{what}: items {spec.items!r} is {type_name(listed)}, not a list")
    if len(listed) > limits.max_items:
        return Fail(
            f"{what}: {len(listed)} items; at most {limits.max_items} (ORCHY_MAX_FOR_EACH_ITEMS)"
        )
    concurrency = spec.concurrency or limits.default_concurrency
    body = spec.body
    condition = None if spec.filter is None else compile_condition(spec.filter)
    # What each item's payload resolves: a user body's parameters, or a child's input.
    template: JSON = body.parameters if isinstance(body, ItemBody) else body.input
    fixed = None if any(references(template)) else _item_payload(body, template)
    scope = dict(document)  # the run's document with $.item and $.index
    lines: list[str] = []
    warnings: list[str] = []
    size = 0
    for index, item in enumerate(listed):
        scope[ITEM], scope[INDEX] = item, index
        if condition is not None:
            try:
                if not condition.test(scope):
                    continue
            except (ConditionError, ConditionSyntaxError) as error:
                return Fail(f"{what}: filter {spec.filter!r} on item {index}: {error}")
        if fixed is None:
            resolution = resolve(template, scope)
            payload = _item_payload(body, resolution.value)
            for warning in resolution.warnings:
                if len(warnings) < _MOST_WARNINGS and warning not in warnings:
                    warnings.append(warning)
        else:
            payload = fixed
        size += len(payload)
        if size > limits.max_payload_bytes:
            return Fail(
                f"{what}: the items' parameters exceed {limits.max_payload_bytes} bytes "
                "(ORCHY_MAX_FOR_EACH_PAYLOAD_BYTES)"
            )
        lines.append(f"{index} {payload}")
    received: JSON = {
        "items": len(listed),
        "selected": len(lines),
        "concurrency": concurrency,
        "onItemFailure": spec.on_item_failure.value,
        "body": body.name if isinstance(body, ItemBody) else {"workflow": body.workflow},
    }
    if not lines:
        return Done(output=[], input=received)
    return StartItems(
        queue=body.name if isinstance(body, ItemBody) else "",
        header=f"{concurrency} {spec.on_item_failure.value}",
        lines=lines,
        warnings=warnings,
        input=received,
        workflow=None if isinstance(body, ItemBody) else body.workflow,
    )


def expand_json(action: ActionDef, document_json: str, limits: ItemLimits) -> Outcome:
    """:func:`expand` on a document given as JSON text: what a ``DocumentPool`` runs."""
    return expand(action, orjson.loads(document_json), limits)


def _dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


def _item_payload(body: ItemBody | SubflowBody, resolved: JSON) -> str:
    """An item's payload: a user body's task input, or the request of a sub-workflow body's
    child (what a sub-workflow execution records as its input: the spawn timer reads it)."""
    if isinstance(body, ItemBody):
        return _dumps(resolved)
    return _dumps(child_request(body.workflow, body.version, resolved))


@dataclass(frozen=True)
class ItemResult:
    """One item of a for-each as its run holds it."""

    index: int
    status: str
    output_json: str | None
    error: str | None


def items_of(fields: dict[str, str], for_each_seq: int) -> list[ItemResult]:
    """The started items of the for-each execution ``for_each_seq``, in the items' order."""
    parent = str(for_each_seq)
    found = []
    for key, value in fields.items():
        if value == parent and key.startswith("x:") and key.endswith(":p"):
            prefix = key[:-1]
            found.append(
                ItemResult(
                    index=int(fields[prefix + "i"]),
                    status=fields[prefix + "s"],
                    output_json=fields.get(prefix + "o"),
                    error=fields.get(prefix + "e"),
                )
            )
    found.sort(key=lambda item: item.index)
    return found


def failed_item(fields: dict[str, str], for_each_seq: int) -> str | None:
    """Why the for-each fails ("fail" and an item failed), or None."""
    first = fields.get(f"x:{for_each_seq}:ff")
    if first is None:
        return None
    index = fields.get(f"x:{first}:i", "?")
    return f"item {index} failed: {fields.get(f'x:{first}:e') or 'no error given'}"


def output_of(items: list[ItemResult]) -> JSON:
    """The for-each's output: each item's output (with "collect", a failed item's is
    ``{"error": ...}``), in the items' order."""
    return [orjson.loads(item.output_json or "null") for item in items]
