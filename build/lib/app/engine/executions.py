"""One action's executions in a run, a page at a time: each run of an action (a branch
reached twice, a loop's pass, an error edge leading back) is an execution with its own
status, attempts, input, output, error and times."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.catalog import Catalog
from app.engine.errors import NotFound
from app.engine.snapshot import Execution, RunSnapshot
from app.store import Store


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[Execution]  # in seq order
    total: int  # executions of the action in the run
    next_offset: int | None  # where the next page starts; None after the last


async def action_executions(
    store: Store, catalog: Catalog, flow_id: str, action_id: int, offset: int, limit: int
) -> ExecutionPage:
    """``limit`` executions of ``action_id`` from the ``offset``-th. Raises NotFound for an
    unknown run, and for an action its workflow does not have."""
    found = await store.action_executions(flow_id, action_id, offset, limit)
    if found is None:
        raise NotFound(f"flow {flow_id!r} not found")
    if found.total == 0:  # never run: fine if the workflow has it
        workflow = await catalog.workflow(found.workflow, found.version)
        if workflow is None or action_id not in workflow.actions:
            raise NotFound(
                f"action {action_id} not found in flow {flow_id!r} "
                f"(workflow {found.workflow!r} version {found.version})"
            )
    executions = []
    for seq, fields in found.page:
        # The execution's fields alone make a snapshot enough to read it.
        execution = RunSnapshot(flow_id, fields).execution(seq)
        if execution is not None:  # gone meanwhile (the run expired)
            executions.append(execution)
    end = offset + limit
    return ExecutionPage(executions, found.total, end if end < found.total else None)
