"""Cycles of a definition's ``next`` graph (app/engine/cycles.py) and the rule registration
applies to them: a cycle needs a condition with a branch out of it. Pure: no Redis."""

from __future__ import annotations

from typing import Any

import pytest

from app.definition import DefinitionError
from app.engine.cycles import cycle_message, cycles, loop_of, strongly_connected
from app.engine.validate import parse_workflow


def user(action_id: int, *targets: int, **fields: Any) -> dict[str, Any]:
    nxt = {"default": list(targets)} if targets else {}
    return {"id": action_id, "type": "user", "name": "work", "next": nxt, **fields}


def while_(action_id: int, body: list[int], after: list[int] | None = None) -> dict[str, Any]:
    nxt = {"body": body} if after is None else {"body": body, "default": after}
    return {"id": action_id, "type": "system", "name": "while", "condition": "true", "next": nxt}


def parse(*actions: dict[str, Any]) -> Any:
    return parse_workflow({"name": "wf", "rootAction": 1, "actions": list(actions)})


def rejection(*actions: dict[str, Any]) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse(*actions)
    return str(caught.value)


def test_components_of_a_graph() -> None:
    graph = {1: [2], 2: [3, 5], 3: [4], 4: [2], 5: [5], 6: [1]}

    found = sorted(sorted(component) for component in strongly_connected(graph))

    assert found == [[1], [2, 3, 4], [5], [6]]
    assert cycles(graph) == [[2, 3, 4], [5]]


def test_a_long_chain_and_a_long_cycle_need_no_recursion() -> None:
    size = 50_000
    chain = {node: [node + 1] if node < size else [] for node in range(1, size + 1)}
    ring = {node: [node % size + 1] for node in range(1, size + 1)}

    assert cycles(chain) == []
    assert cycles(ring) == [list(range(1, size + 1))]


def test_two_cycles_joined_one_way_are_two_components() -> None:
    graph = {1: [2], 2: [1, 3], 3: [4], 4: [3]}

    assert cycles(graph) == [[1, 2], [3, 4]]


def test_the_message_names_the_actions_of_the_cycle() -> None:
    assert cycle_message([7]).startswith("action 7 forms a cycle that no condition can leave")
    assert cycle_message([2, 3, 4]).startswith("actions 2, 3, 4 form a cycle")
    many = cycle_message(list(range(1, 31)))
    assert many.startswith("actions 1, 2, 3,") and "20 and 10 more form a cycle" in many


def test_a_loop_holds_the_body_but_not_the_outer_loop() -> None:
    # 1 while (body 2) -> 2 while (body 3, default 4) -> 3 -> 2; 4 -> 1.
    graph = {1: [2], 2: [3, 4], 3: [2], 4: [1]}

    assert loop_of(graph, 2, [3]) == {3}
    assert loop_of(graph, 1, [2]) == {2, 3, 4}


def test_a_body_path_that_never_comes_back_is_not_in_the_loop() -> None:
    graph = {1: [2, 9], 2: [3, 5], 3: [1], 5: [6], 6: [], 9: []}

    assert loop_of(graph, 1, [2]) == {2, 3}


def test_a_cycle_through_a_while_is_accepted() -> None:
    parse(while_(1, [2], [3]), user(2, 1), user(3))


def test_a_cycle_whose_while_has_no_default_leaves_by_its_empty_branch() -> None:
    parse(while_(1, [2]), user(2, 1))


def test_a_cycle_without_a_condition_is_refused_even_beside_a_loop() -> None:
    message = rejection(while_(1, [2], [3]), user(2, 1), user(3, 4), user(4, 3))

    assert message.startswith("actions 3, 4 form a cycle that no condition can leave")


def test_a_self_loop_is_refused() -> None:
    assert rejection(user(1, 1)).startswith("action 1 forms a cycle")


def test_a_condition_whose_branches_all_stay_inside_does_not_make_a_cycle_leavable() -> None:
    switch = {
        "id": 2,
        "type": "system",
        "name": "switch",
        "expression": "{$.input.x}",
        "next": {"a": [3], "b": [3, 4], "error": [4]},
    }
    message = rejection(user(1, 2), switch, user(3, 2), user(4))

    assert message.startswith("actions 2, 3 form a cycle")


def test_an_if_with_a_missing_branch_and_no_default_can_leave() -> None:
    condition = {"id": 2, "type": "system", "name": "if", "condition": "true"}
    parse(user(1, 2), {**condition, "next": {"true": [3]}}, user(3, 2))


def test_a_while_knows_the_joins_of_its_loop() -> None:
    # 1 while (body 2) -> 2 -> [3, 4] -> join 5 -> 1; after the loop 6 -> join 7.
    join = {"type": "system", "name": "join"}
    definition = parse(
        while_(1, [2], [6]),
        user(2, 3, 4),
        user(3, 5),
        user(4, 5),
        {**join, "id": 5, "joinOn": [3, 4], "next": {"default": [1]}},
        user(6, 7),
        {**join, "id": 7, "joinOn": [6]},
    )

    assert definition.actions[1].loop_joins == (5,)
    assert definition.actions[5].loop_joins == ()


def test_a_join_in_a_loop_that_joins_on_an_action_outside_it_is_refused() -> None:
    # 1 -> while 2 (body 3) -> 3 -> join 4 on [1, 3] -> 2: in a second pass, 1 never runs.
    message = rejection(
        user(1, 2),
        while_(2, [3]),
        user(3, 4),
        {"id": 4, "type": "system", "name": "join", "joinOn": [1, 3], "next": {"default": [2]}},
    )

    assert message == (
        "action 4 (join): joinOn names action 1, which is not in the loop of action 2 (while): "
        "a join in a loop joins on actions of that loop"
    )


def test_a_join_outside_a_loop_that_joins_on_an_action_of_it_is_refused() -> None:
    # 1 -> [while 2, 5]; 2 (body 3) -> 3 -> 2; 2 and 5 -> join 4 on [2, 5]: the while
    # COMPLETES at each pass, so the join would fire while the loop goes on.
    join = {"id": 4, "type": "system", "name": "join", "joinOn": [2, 5]}
    message = rejection(user(1, 2, 5), while_(2, [3], [4]), user(3, 2), user(5, 4), join)

    assert message == (
        "action 4 (join): joinOn names action 2, which runs in each pass of the loop of "
        "action 2 (while): a join outside the loop joins on an action after it"
    )
    parse(
        user(1, 2, 5),
        while_(2, [3], [6]),
        user(3, 2),
        user(5, 4),
        user(6, 4),
        {**join, "joinOn": [6, 5]},
    )
