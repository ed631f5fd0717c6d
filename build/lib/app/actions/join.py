"""join: continue once, when every action in ``joinOn`` has finished."""

from __future__ import annotations

from app.actions.base import AwaitJoin, Outcome, SystemAction
from app.definition import ActionDef, DefinitionError
from app.jsontypes import JSONObject


class JoinAction(SystemAction):
    name = "join"
    reads_document = False

    def validate(self, action: ActionDef) -> None:
        join_on = action.join_on
        if not isinstance(join_on, list) or not join_on:
            raise DefinitionError(f"{action.label}: join needs joinOn, a non-empty list of ids")
        for action_id in join_on:
            if not isinstance(action_id, int) or isinstance(action_id, bool):
                raise DefinitionError(
                    f"{action.label}: joinOn holds {action_id!r}, which is not an action id"
                )
        if len(set(join_on)) != len(join_on):
            raise DefinitionError(f"{action.label}: joinOn lists an id more than once")

    def run(self, action: ActionDef, document: JSONObject) -> Outcome:
        join_on = list(action.join_on or [])
        return AwaitJoin(join_on=join_on, input={"joinOn": join_on})
