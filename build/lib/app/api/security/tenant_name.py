"""What a tenant's name may be: it becomes part of every Redis key of the tenant."""

from __future__ import annotations

import re

TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TENANT_NAME_RULE = "a letter or digit, then up to 63 letters, digits, '_', '.' or '-'"


def is_tenant_name(name: str) -> bool:
    return TENANT_NAME.fullmatch(name) is not None
