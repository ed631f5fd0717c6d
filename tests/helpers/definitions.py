"""Builders of workflow definitions as the HTTP API takes them."""

from __future__ import annotations

from typing import Any

import httpx


def user(
    action_id: int, name: str, nxt: dict[str, list[int]] | None = None, **params: Any
) -> dict[str, Any]:
    action: dict[str, Any] = {"id": action_id, "type": "user", "name": name, "parameters": params}
    if nxt:
        action["next"] = nxt
    return action


def system(
    action_id: int, name: str, nxt: dict[str, list[int]] | None = None, **fields: Any
) -> dict[str, Any]:
    action: dict[str, Any] = {"id": action_id, "type": "system", "name": name, **fields}
    if nxt:
        action["next"] = nxt
    return action


def sub_workflow(
    action_id: int,
    child: str,
    nxt: dict[str, list[int]] | None = None,
    version: int | None = None,
    **parameters: Any,
) -> dict[str, Any]:
    """A subWorkflow action running ``child`` (``version``, else its latest) with
    ``parameters`` as the child's input."""
    fields: dict[str, Any] = {"workflow": child, "parameters": parameters}
    if version is not None:
        fields["version"] = version
    return system(action_id, "subWorkflow", nxt, **fields)


def workflow(name: str, *actions: dict[str, Any], root: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "rootAction": root, "actions": list(actions), **extra}


def fan_out(name: str, head: dict[str, Any], queue: str, width: int) -> dict[str, Any]:
    """``head`` (made action 1) starts ``width`` user actions of ``queue`` at once."""
    ids = list(range(2, width + 2))
    return workflow(
        name, {**head, "id": 1, "next": {"default": ids}}, *(user(i, queue) for i in ids)
    )


def user_chain(name: str, queue: str, length: int) -> dict[str, Any]:
    """``length`` user actions of ``queue`` in a row."""
    return workflow(
        name,
        *(
            user(i, queue, {"default": [i + 1]} if i < length else None)
            for i in range(1, length + 1)
        ),
    )


def switch_chain(first: int, length: int) -> list[dict[str, Any]]:
    """``length`` switches on ``$.input.way`` in a row from id ``first``; the last one's
    default branch leads nowhere (without one, a switch fails)."""
    last = first + length - 1
    return [
        system(
            action_id,
            "switch",
            {"default": [action_id + 1] if action_id < last else []},
            expression="{$.input.way}",
        )
        for action_id in range(first, last + 1)
    ]


async def set_action(http: httpx.AsyncClient, name: str, **settings: Any) -> None:
    response = await http.post("/metadata/action", json={"name": name, **settings})
    assert response.status_code == 200, response.text
