"""The user action of ``delay_example.json``: what runs once Orchy's 10 s delay is over.

``orchy worker workflows/delay_example_worker.py``, then run ``delayExample`` with
``--input @workflows/delay_example.input.json``: the run waits 10 s in action 7 (the delay),
then ``after-delay`` logs the input's ``message`` and answers ``{"message": ...}``.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import Worker

logger = logging.getLogger("orchy.worker.delay_example")

worker = Worker()


@worker.action("after-delay")
async def after_delay(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("after the delay: %s", input.get("message"))
    return {"message": input.get("message")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
