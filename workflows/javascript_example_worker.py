"""The user actions of ``javascript_example.json``: around Orchy's javascript example.

``orchy worker workflows/javascript_example_worker.py``, then run ``javascriptExample`` with
``--input @workflows/javascript_example.input.json`` (Bruno, 25). ``load-user`` answers
``{"user": {"name", "age"}}`` from the input; the script (action 2) copies the user and adds
``discount``: 20 from age 20 on, else 10; ``show-discount`` answers the name and discount it
got through ``{$.2.output.user.discount}``.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.javascript_example")

worker = Worker()


@worker.action("load-user")
async def load_user(input: dict[str, Any]) -> dict[str, Any]:
    age = input.get("age")
    if isinstance(age, bool) or not isinstance(age, int | float):
        raise NonRetryableError(f"age must be a number, not {age!r}")
    return {"user": {"name": input.get("name"), "age": age}}


@worker.action("show-discount")
async def show_discount(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("%s gets a discount of %s %%", input.get("name"), input.get("discount"))
    return {"name": input.get("name"), "discount": input.get("discount")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
