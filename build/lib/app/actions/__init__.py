"""System actions, one module each, found by name through :data:`REGISTRY`."""

from __future__ import annotations

from app.actions.base import SystemAction
from app.actions.delay import DelayAction
from app.actions.for_each import ForEachAction
from app.actions.if_ import IfAction
from app.actions.javascript import JavaScriptAction
from app.actions.join import JoinAction
from app.actions.sub_workflow import SubWorkflowAction
from app.actions.switch import SwitchAction
from app.actions.terminate import TerminateAction
from app.actions.wait import WaitAction
from app.actions.while_ import WhileAction

REGISTRY: dict[str, SystemAction] = {
    action.name: action
    for action in (
        SwitchAction(),
        DelayAction(),
        WaitAction(),
        JavaScriptAction(),
        JoinAction(),
        TerminateAction(),
        IfAction(),
        ForEachAction(),
        WhileAction(),
        SubWorkflowAction(),
    )
}


def get_action(name: str) -> SystemAction | None:
    """The system action called ``name``, or None when there is none."""
    return REGISTRY.get(name)
