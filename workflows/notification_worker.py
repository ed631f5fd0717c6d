"""The user actions of ``notificationWorkflow.json``, with demo data.

Run it with ``orchy worker workflows/notification_worker.py`` next to ``orchy serve``.

``query-db`` looks the user up in a small table, so the workflow's branches can be steered
from the run input:

=========  ======  ======  ===  ====================================
userId     name    gender  age  path taken
=========  ======  ======  ===  ====================================
1234       Bruno   MALE    25   SMS (discount 20 %), delay, WhatsApp
42         Ana     FEMALE  30   e-mail, wait for the ``open`` event
7          Teo     MALE    17   SMS with discount 10 %
any other  Guest   MALE    25   like 1234
=========  ======  ======  ===  ====================================

Every user gets the phone ``+1-555-<userId>`` and the e-mail ``user<userId>@example.com``.
The senders only log and answer ``{"sent": true, "to": ...}``.
"""

from __future__ import annotations

import logging
from typing import Any

from orchy import NonRetryableError, Worker

logger = logging.getLogger("orchy.worker.notification")

worker = Worker()

_USERS: dict[int, dict[str, Any]] = {
    1234: {"name": "Bruno", "gender": "MALE", "age": 25},
    42: {"name": "Ana", "gender": "FEMALE", "age": 30},
    7: {"name": "Teo", "gender": "MALE", "age": 17},
}
_UNKNOWN_USER: dict[str, Any] = {"name": "Guest", "gender": "MALE", "age": 25}


def _user_id(input: dict[str, Any]) -> int:
    raw = input.get("userId")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise NonRetryableError(f"userId must be an integer, not {raw!r}") from None


@worker.action(
    "query-db", retry_count=3, retry_after_seconds=1.0, retry_policy="FIXED", timeout_seconds=30.0
)
def query_db(input: dict[str, Any]) -> dict[str, Any]:
    user_id = _user_id(input)
    phone = f"+1-555-{user_id}"
    email = f"user{user_id}@example.com"
    user = {"id": user_id, **_USERS.get(user_id, _UNKNOWN_USER), "phone": phone}
    return {"user": user, "email": email, "phone": phone}


@worker.action("sendSms")
async def send_sms(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("SMS to %s: %s", input.get("phoneNumber"), input.get("message"))
    return {"sent": True, "to": input.get("phoneNumber")}


@worker.action("sendEmail")
async def send_email(input: dict[str, Any]) -> dict[str, Any]:
    logger.info(
        "e-mail to %s: %s / %s", input.get("to"), input.get("subject"), input.get("message")
    )
    return {"sent": True, "to": input.get("to")}


@worker.action("sendWahtsapp")
async def send_whatsapp(input: dict[str, Any]) -> dict[str, Any]:
    logger.info("WhatsApp to %s: %s", input.get("phoneNumber"), input.get("message"))
    return {"sent": True, "to": input.get("phoneNumber")}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
