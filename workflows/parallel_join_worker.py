"""The user actions of ``parallel_join.json``: an order charged and reserved in parallel.

``orchy worker workflows/parallel_join_worker.py``, then start a run with the input
``{"orderId": "A-1"}``. ``fetch-order`` answers a fixed demo order (two books and a pen,
total 28.0); ``charge-card`` and ``reserve-stock`` run in parallel, the ``join`` waits for
both, and ``ship-order`` gets ``chargeId`` ``ch-A-1`` and ``reservationId`` ``res-A-1``.

``charge-card`` behaves exactly as in ``failure_edge_worker.py`` (amounts above 1000 are
declined with a NonRetryableError): both workers poll the same ``charge-card`` queue, so
either may take the other's tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.parallel_join")

worker = Worker()

CARD_LIMIT = 1000
_ORDER_ITEMS: list[dict[str, Any]] = [
    {"sku": "BOOK-1", "quantity": 2, "price": 12.5},
    {"sku": "PEN-7", "quantity": 1, "price": 3.0},
]


@worker.action("fetch-order")
def fetch_order(input: dict[str, Any]) -> dict[str, Any]:
    order_id = input.get("orderId")
    if not order_id:
        raise NonRetryableError("orderId is required")
    total = sum(item["quantity"] * item["price"] for item in _ORDER_ITEMS)
    return {"orderId": order_id, "items": _ORDER_ITEMS, "total": total}


@worker.action("charge-card")
def charge_card(input: dict[str, Any]) -> dict[str, Any]:
    amount = input.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise NonRetryableError(f"amount must be a number, not {amount!r}")
    if amount > CARD_LIMIT:
        raise NonRetryableError(f"card declined: {amount} is over the limit of {CARD_LIMIT}")
    logger.info("charged %s for order %s", amount, input.get("orderId"))
    return {"chargeId": f"ch-{input.get('orderId')}", "amount": amount}


@worker.action("reserve-stock")
async def reserve_stock(input: dict[str, Any]) -> dict[str, Any]:
    items = input.get("items") or []
    logger.info("reserved %d item line(s) for order %s", len(items), input.get("orderId"))
    return {"reservationId": f"res-{input.get('orderId')}", "items": items}


@worker.action("ship-order")
async def ship_order(input: dict[str, Any]) -> dict[str, Any]:
    order_id = input.get("orderId")
    logger.info(
        "shipping order %s (charge %s, reservation %s)",
        order_id,
        input.get("chargeId"),
        input.get("reservationId"),
    )
    return {
        "shipped": True,
        "orderId": order_id,
        "chargeId": input.get("chargeId"),
        "reservationId": input.get("reservationId"),
        "trackingNumber": f"TRK-{order_id}",
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
