"""The user actions of ``littlehorse_checkout.json``: LittleHorse's checkout example.

``orchy worker workflows/littlehorse_checkout_worker.py``, then
``orchy run littlehorseCheckout --input @workflows/littlehorse_checkout.input.json --wait``
completes the order. An item the inventory cannot cover (``{"sku": "lamp", "quantity": 1}``:
none in stock) or the card ``"0000"`` (declined) fails that step without retries: the order is
marked FAILED with the reason and the customer is told.

The orders and the stock are kept in this process's memory, standing in for a database.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.checkout")

worker = Worker()

PRICES = {"book": 12.5, "pen": 1.5, "lamp": 30.0}
STOCK = {"book": 100, "pen": 100, "lamp": 0}
DECLINED_CARD = "0000"
orders: dict[str, str] = {}  # order id -> status


@worker.action("update-order")
async def update_order(input: dict[str, Any]) -> dict[str, Any]:
    order_id, status = str(input.get("orderId")), str(input.get("status"))
    orders[order_id] = status
    logger.info("order %s is %s %s", order_id, status, input.get("reason") or "")
    return {"orderId": order_id, "status": status, "reason": input.get("reason")}


@worker.action("reserve-inventory")
async def reserve_inventory(input: dict[str, Any]) -> dict[str, Any]:
    items = input.get("items")
    if not isinstance(items, list) or not items:
        raise NonRetryableError("items must be a non-empty list")
    wanted: dict[str, int] = {}
    for item in items:
        sku, quantity = item.get("sku"), item.get("quantity")
        if sku not in PRICES or not isinstance(quantity, int) or quantity < 1:
            raise NonRetryableError(f"unknown item or quantity: {item!r}")
        wanted[sku] = wanted.get(sku, 0) + quantity
    for sku, quantity in wanted.items():
        if STOCK[sku] < quantity:
            raise NonRetryableError(f"not enough {sku} in stock ({STOCK[sku]} left)")
    for sku, quantity in wanted.items():
        STOCK[sku] -= quantity
    total = sum(PRICES[sku] * quantity for sku, quantity in wanted.items())
    return {"reserved": wanted, "total": total}


@worker.action("charge-credit-card")
async def charge_credit_card(input: dict[str, Any]) -> dict[str, Any]:
    if input.get("card") == DECLINED_CARD:
        raise NonRetryableError(f"card {DECLINED_CARD} declined")
    return {"charged": input.get("amount"), "orderId": input.get("orderId")}


@worker.action("notify-customer")
async def notify_customer(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("to %s: %s", input.get("customer"), input.get("message"))
    return {"sent": True, "to": input.get("customer"), "message": input.get("message")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
