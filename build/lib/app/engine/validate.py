"""Turn a decoded JSON workflow definition into a :class:`WorkflowDef`, or say what is wrong.

Every rule of SPEC section 1 is checked here; each :class:`DefinitionError` names the field
or the action and the problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeGuard

from app.actions import REGISTRY, for_each, get_action
from app.actions.delay import is_number
from app.actions.if_ import IfAction
from app.actions.join import JoinAction
from app.actions.sub_workflow import SubWorkflowAction
from app.actions.switch import SwitchAction
from app.actions.wait import WaitAction, is_sendable
from app.actions.while_ import BODY_BRANCH, WhileAction
from app.definition import (
    ActionDef,
    ActionType,
    DefinitionError,
    SwitchCase,
    WorkflowDef,
    objects_in,
)
from app.engine.conditions import ConditionSyntaxError, compile_condition
from app.engine.cycles import cycle_message, cycles, loop_of
from app.engine.params import PathError, compile_path, references
from app.engine.retry import ActionSettings
from app.engine.searchable import parse_searchable
from app.engine.validate_vars import check_set_vars, parse_set_vars, parse_vars
from app.jsontypes import JSON
from app.settings import Settings

_ACTION_TYPES = ", ".join(repr(kind.value) for kind in ActionType)


@dataclass(frozen=True)
class Limits:
    """What a definition may hold (``ORCHY_MAX_*``), checked when it is registered only: a
    stored definition stays readable when a limit is lowered or a rule is added."""

    max_actions: int
    max_next_ids: int
    max_duration_seconds: float
    max_retry_count: int
    max_condition_depth: int
    max_var_bytes: int | None = None
    max_for_each_concurrency: int | None = None
    max_search_paths: int | None = None
    max_search_path_length: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_actions=settings.max_actions,
            max_next_ids=settings.max_next_ids,
            max_duration_seconds=settings.max_duration_seconds,
            max_retry_count=settings.max_retry_count,
            max_condition_depth=settings.max_json_depth,
            max_var_bytes=settings.max_output_bytes,
            max_for_each_concurrency=settings.max_for_each_concurrency,
            max_search_paths=settings.search_max_paths,
            max_search_path_length=settings.search_max_path_length,
        )

    def check_duration(self, where: str, field: str, seconds: float | None) -> None:
        if seconds is not None and not seconds <= self.max_duration_seconds:
            raise DefinitionError(
                f"{where}: {field} must be at most {self.max_duration_seconds:.15g} seconds "
                f"(ORCHY_MAX_DURATION_SECONDS), not {seconds!r}"
            )


def check_action_settings(action: ActionSettings, limits: Limits) -> None:
    """A user action's retry and lease settings, within the limits."""
    where = f"action {action.name!r}"
    if action.retry_count > limits.max_retry_count:
        raise DefinitionError(
            f"{where}: retryCount must be at most {limits.max_retry_count} "
            f"(ORCHY_MAX_RETRY_COUNT), not {action.retry_count}"
        )
    limits.check_duration(where, "retryAfterSeconds", action.retry_after_seconds)
    limits.check_duration(where, "timeoutSeconds", action.timeout_seconds)


def parse_workflow(raw: object, limits: Limits | None = None) -> WorkflowDef:
    """Validate ``raw`` (already JSON-decoded) and build the definition (version 0); with
    ``limits`` (at registration), check that it stays within them."""
    if not isinstance(raw, dict):
        raise DefinitionError("a workflow definition must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("name must be a non-empty string")
    raw_actions = raw.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        raise DefinitionError("actions must be a non-empty list")
    if limits is not None and len(raw_actions) > limits.max_actions:
        raise DefinitionError(
            f"actions: at most {limits.max_actions} actions (ORCHY_MAX_ACTIONS), "
            f"not {len(raw_actions)}"
        )

    actions: dict[int, ActionDef] = {}
    for index, raw_action in enumerate(raw_actions):
        action = _parse_action(index, raw_action)
        if action.id in actions:
            raise DefinitionError(f"{action.label}: id {action.id} is used by more than one action")
        actions[action.id] = action

    root = raw.get("rootAction")
    if not _is_id(root):
        raise DefinitionError(f"rootAction must be an action id (an integer), not {root!r}")
    if root not in actions:
        raise DefinitionError(f"rootAction {root} is not the id of an action")

    variables = parse_vars(raw.get("vars"), None if limits is None else limits.max_var_bytes)
    for action in actions.values():
        check_set_vars(action, variables)
        _check_links(action, actions)
        _check_system_action(action)
        _check_references(action)
        if limits is not None:
            _check_limits(action, limits)
    searchable = parse_searchable(
        raw.get("searchable"),
        variables,
        None if limits is None else limits.max_search_paths,
        None if limits is None else limits.max_search_path_length,
    )
    output = raw.get("output")
    _check_template_references("output", output)
    _check_reachable(root, actions)
    _check_cycles(actions)
    _check_loop_joins(actions)
    return WorkflowDef(
        name=name,
        root_action=root,
        actions=actions,
        output=output,
        vars=variables,
        searchable=searchable,
        source=raw,
    )


def _parse_action(index: int, raw: JSON) -> ActionDef:
    where = f"actions[{index}]"
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where} must be an object")
    action_id = raw.get("id")
    if not _is_id(action_id):
        raise DefinitionError(f"{where}: id must be an integer, not {action_id!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"action {action_id}: name must be a non-empty string")
    label = f"action {action_id} ({name})"
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in set(ActionType):
        raise DefinitionError(f"{label}: type must be one of {_ACTION_TYPES}, not {kind!r}")
    system = kind == ActionType.SYSTEM
    return ActionDef(
        id=action_id,
        type=ActionType(kind),
        name=name,
        parameters=_optional(raw, "parameters", label, dict, "an object") or {},
        next=_parse_next(raw.get("next"), label),
        expression=_optional(raw, "expression", label, str, "a string"),
        delay_seconds=_optional_number(raw, "delaySeconds", label),
        event=_optional(raw, "event", label, str, "a string"),
        timeout_seconds=_optional_number(raw, "timeoutSeconds", label),
        join_on=_parse_join_on(raw.get("joinOn"), label),
        # Read for the actions that use them only: other kinds keep such fields unread.
        cases=_parse_cases(raw.get("cases"), label)
        if system and name == SwitchAction.name
        else None,
        condition=_optional(raw, "condition", label, str, "a string")
        if system and name in (IfAction.name, WhileAction.name)
        else None,
        set_vars=parse_set_vars(raw.get("setVars"), label),
        for_each=for_each.parse(raw, label) if system and name == for_each.NAME else None,
        check=_optional(raw, "check", label, str, "a string")
        if system and name == WhileAction.name
        else None,
        correlation_key=_optional(raw, "correlationKey", label, str, "a string")
        if system and name == WaitAction.name
        else None,
        **_sub_workflow_fields(raw, system, name),
    )


def _sub_workflow_fields(raw: dict[str, Any], system: bool, name: str) -> dict[str, JSON]:
    """A subWorkflow's ``workflow`` and ``version``, as written (read for it only)."""
    if not system or name != SubWorkflowAction.name:
        return {}
    return {"workflow": raw.get("workflow"), "workflow_version": raw.get("version")}


def _optional(raw: dict[str, Any], key: str, label: str, kind: type, described: str) -> Any:
    """``raw[key]`` when it is a ``kind``; None when absent or null."""
    value = raw.get(key)
    if value is not None and not isinstance(value, kind):
        raise DefinitionError(f"{label}: {key} must be {described}, not {value!r}")
    return value


def _optional_number(raw: dict[str, Any], key: str, label: str) -> float | None:
    value = raw.get(key)
    if value is not None and not is_number(value):
        raise DefinitionError(f"{label}: {key} must be a number, not {value!r}")
    return value


def _parse_next(raw: JSON, label: str) -> dict[str, list[int]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"{label}: next must be an object of branch -> list of ids")
    for branch, targets in raw.items():
        if not isinstance(targets, list) or not all(_is_id(target) for target in targets):
            raise DefinitionError(
                f"{label}: next.{branch} must be a list of action ids, not {targets!r}"
            )
    return {branch: list(targets) for branch, targets in raw.items()}


def _parse_join_on(raw: JSON, label: str) -> list[int] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(_is_id(item) for item in raw):
        raise DefinitionError(f"{label}: joinOn must be a list of action ids, not {raw!r}")
    return list(raw)


def _parse_cases(raw: JSON, label: str) -> tuple[SwitchCase, ...] | None:
    if raw is None:
        return None
    cases = []
    for where, case in objects_in(raw, label, "cases", "{when, branch}"):
        when, branch = case.get("when"), case.get("branch")
        if not isinstance(when, str):
            raise DefinitionError(f"{where}.when must be a string (a condition), not {when!r}")
        if not isinstance(branch, str) or not branch:
            raise DefinitionError(f"{where}.branch must be a non-empty string, not {branch!r}")
        cases.append(SwitchCase(when=when, branch=branch))
    return tuple(cases)


def _check_links(action: ActionDef, actions: dict[int, ActionDef]) -> None:
    for branch, targets in action.next.items():
        for target in targets:
            if target not in actions:
                raise DefinitionError(
                    f"{action.label}: next.{branch} names action {target}, which does not exist"
                )
    for joined in action.join_on or []:
        if joined not in actions:
            raise DefinitionError(
                f"{action.label}: joinOn names action {joined}, which does not exist"
            )


def _check_system_action(action: ActionDef) -> None:
    if action.type is not ActionType.SYSTEM:
        return
    system_action = get_action(action.name)
    if system_action is None:
        known = ", ".join(sorted(REGISTRY))
        raise DefinitionError(
            f"{action.label}: unknown system action {action.name!r} (known: {known})"
        )
    system_action.validate(action)


def _check_limits(action: ActionDef, limits: Limits) -> None:
    """Rules for new definitions only (see :class:`Limits`)."""
    is_wait = action.type is ActionType.SYSTEM and action.name == WaitAction.name
    if is_wait and action.event is not None and not is_sendable(action.event):
        raise DefinitionError(
            f"{action.label}: event {action.event!r} cannot be sent as a URL path segment "
            "(POST /flow/{id}/events/{event}): no '/', control characters, '.' or '..'"
        )
    for branch, targets in action.next.items():
        if len(targets) > limits.max_next_ids:
            raise DefinitionError(
                f"{action.label}: next.{branch} holds {len(targets)} ids; at most "
                f"{limits.max_next_ids} (ORCHY_MAX_NEXT_IDS)"
            )
    limits.check_duration(action.label, "delaySeconds", action.delay_seconds)
    _check_for_each_limits(action, limits)
    limits.check_duration(action.label, "timeoutSeconds", action.timeout_seconds)
    for where, text in action.conditions:
        try:
            depth = compile_condition(text).depth
        except ConditionSyntaxError:
            continue  # the system action's own validation words it
        if depth > limits.max_condition_depth:
            raise DefinitionError(
                f"{action.label}: {where} is nested {depth} levels deep; at most "
                f"{limits.max_condition_depth} (ORCHY_MAX_JSON_DEPTH)"
            )


def _check_for_each_limits(action: ActionDef, limits: Limits) -> None:
    spec = action.for_each
    most = limits.max_for_each_concurrency
    if spec is None or spec.concurrency is None or most is None:
        return
    if spec.concurrency > most:
        raise DefinitionError(
            f"{action.label}: concurrency must be at most {most} "
            f"(ORCHY_MAX_FOR_EACH_CONCURRENCY), not {spec.concurrency}"
        )
    if spec.filter is not None:
        try:
            depth = compile_condition(spec.filter).depth
        except ConditionSyntaxError:
            return  # parse words it
        if depth > limits.max_condition_depth:
            raise DefinitionError(
                f"{action.label}: filter is nested {depth} levels deep; at most "
                f"{limits.max_condition_depth} (ORCHY_MAX_JSON_DEPTH)"
            )


def _check_references(action: ActionDef) -> None:
    # A switch's expression is checked by the switch itself (see _check_system_action).
    _check_template_references(f"{action.label}: parameters", action.parameters)


def _check_template_references(where: str, template: JSON) -> None:
    for ref in references(template):
        try:
            compile_path(ref)
        except PathError as error:
            raise DefinitionError(f"{where}: {error}") from None


def _check_reachable(root: int, actions: dict[int, ActionDef]) -> None:
    reached = {root}
    frontier = [root]
    while frontier:
        for target in _successors(actions[frontier.pop()]):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    unreachable = [action.label for action in actions.values() if action.id not in reached]
    if unreachable:
        verb = "is" if len(unreachable) == 1 else "are"
        raise DefinitionError(
            f"{', '.join(unreachable)} {verb} not reachable from rootAction {root}"
        )


def _check_cycles(actions: dict[int, ActionDef]) -> None:
    """A cycle (a loop) is allowed when a condition in it (while, if, switch) has a branch
    that leaves it: one whose ids are all outside the cycle, or none at all."""
    graph = {action_id: _successors(action) for action_id, action in actions.items()}
    for members in cycles(graph):
        inside = set(members)
        if not any(_can_leave(actions[member], inside) for member in members):
            raise DefinitionError(cycle_message(members))


def _can_leave(action: ActionDef, inside: set[int]) -> bool:
    system_action = get_action(action.name) if action.type is ActionType.SYSTEM else None
    if system_action is None:
        return False
    branches = system_action.branches(action)
    return any(not any(target in inside for target in targets) for targets in branches)


def _check_loop_joins(actions: dict[int, ActionDef]) -> None:
    """Gives each while the joins of its loop, which fire once per pass of its body."""
    whiles = [
        action
        for action in actions.values()
        if action.type is ActionType.SYSTEM and action.name == WhileAction.name
    ]
    joins = [
        action
        for action in actions.values()
        if action.type is ActionType.SYSTEM and action.name == JoinAction.name
    ]
    if not whiles or not joins:
        return
    graph = {action_id: _successors(action) for action_id, action in actions.items()}
    for action in whiles:
        loop = loop_of(graph, action.id, action.next.get(BODY_BRANCH, []))
        for join in joins:
            _check_join_of_loop(join, action, loop)
        in_loop = tuple(sorted(join.id for join in joins if join.id in loop))
        if in_loop:
            actions[action.id] = dataclasses.replace(action, loop_joins=in_loop)


def _check_join_of_loop(join: ActionDef, head: ActionDef, loop: set[int]) -> None:
    """A join in a loop waits for its actions to run in each pass; a join outside it fires
    once, so it must not take an action of the loop as finished while the loop goes on."""
    for joined in join.join_on or []:
        if join.id in loop and joined not in loop:
            raise DefinitionError(
                f"{join.label}: joinOn names action {joined}, which is not in the loop of "
                f"{head.label}: a join in a loop joins on actions of that loop"
            )
        if join.id not in loop and (joined in loop or joined == head.id):
            raise DefinitionError(
                f"{join.label}: joinOn names action {joined}, which runs in each pass of the "
                f"loop of {head.label}: a join outside the loop joins on an action after it"
            )


def _successors(action: ActionDef) -> list[int]:
    return list(dict.fromkeys(target for targets in action.next.values() for target in targets))


def _is_id(value: JSON) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
