"""The user actions of ``failure_edge.json``: a declined payment takes the ``error`` branch.

``orchy worker workflows/failure_edge_worker.py``, then start runs with the inputs
``{"orderId": "A-1", "amount": 50}`` (charged: ``send-receipt`` runs) and
``{"orderId": "A-2", "amount": 5000}``: ``charge-card`` raises a NonRetryableError, so the
action fails at once, without retries, and ``notify-failure`` gets
``reason`` = ``"NonRetryableError: card declined: 5000 is over the limit of 1000"``.

``charge-card`` behaves exactly as in ``parallel_join_worker.py``: both workers poll the
same ``charge-card`` queue, so either may take the other's tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.failure_edge")

worker = Worker()

CARD_LIMIT = 1000


@worker.action("charge-card")
def charge_card(input: dict[str, Any]) -> dict[str, Any]:
    amount = input.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise NonRetryableError(f"amount must be a number, not {amount!r}")
    if amount > CARD_LIMIT:
        raise NonRetryableError(f"card declined: {amount} is over the limit of {CARD_LIMIT}")
    logger.info("charged %s for order %s", amount, input.get("orderId"))
    return {"chargeId": f"ch-{input.get('orderId')}", "amount": amount}


@worker.action("send-receipt")
async def send_receipt(input: dict[str, Any]) -> dict[str, Any]:
    logger.info(
        "receipt for order %s: %s charged (%s)",
        input.get("orderId"),
        input.get("amount"),
        input.get("chargeId"),
    )
    return {"sent": True, "orderId": input.get("orderId"), "chargeId": input.get("chargeId")}


@worker.action("notify-failure")
async def notify_failure(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("order %s failed: %s", input.get("orderId"), input.get("reason"))
    return {"notified": True, "orderId": input.get("orderId"), "reason": input.get("reason")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
