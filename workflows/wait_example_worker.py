"""The user actions of ``wait_example.json``: the two ways out of Orchy's wait for ``test``.

``orchy worker workflows/wait_example_worker.py``, then run ``waitExample`` and, within
20 s, ``orchy event <flowId> test --data '{"opened": true}'``: ``on-test-event`` gets the
event's body as ``event``. Without the event, after 20 s ``on-timeout`` gets
``{"timedOut": true}`` as ``waited``. Each answers what it got.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import Worker

logger = logging.getLogger("orchy.worker.wait_example")

worker = Worker()


@worker.action("on-test-event")
async def on_test_event(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("event test received: %s", input.get("event"))
    return {"event": input.get("event")}


@worker.action("on-timeout")
async def on_timeout(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("no test event within the timeout: %s", input.get("waited"))
    return {"waited": input.get("waited")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
