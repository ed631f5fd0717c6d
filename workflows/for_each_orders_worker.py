"""The user actions of ``for_each_orders.json``: a for-each charges each order over 10 (at
most 5 at a time) and collects the charges, in the orders' order, for ``send-receipts``.

``orchy worker workflows/for_each_orders_worker.py``, then start a run with
``for_each_orders.input.json``: ``charge-order`` runs for orders ``b`` and ``c`` only (the
filter leaves ``a`` out), and ``send-receipts`` gets
``{"charges": [{"charged": "b", "position": 1}, {"charged": "c", "position": 2}]}``.
An order without an ``id`` fails its charge; with ``"onItemFailure": "collect"`` its entry
in the list is ``{"error": "..."}`` and the others go on.
"""

from __future__ import annotations

from typing import Any

from orchy import NonRetryableError, Worker

worker = Worker()


@worker.action("charge-order")
def charge_order(input: dict[str, Any]) -> dict[str, Any]:
    order = input["order"]
    if "id" not in order:
        raise NonRetryableError(f"order {input['position']} has no id")
    return {"charged": order["id"], "position": input["position"]}


@worker.action("send-receipts")
def send_receipts(input: dict[str, Any]) -> dict[str, Any]:
    return {"sent": len(input["charges"])}
