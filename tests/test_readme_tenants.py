"""The README's "Security: Tenants" held to its word: its table of keys is what
``app/store/keys.py`` builds for the default namespace and for the tenant ``acme``, and the
rule of tenant names it states is the one the code applies."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from app.store.keys import NAMESPACE_PATTERN, TENANTS, Keys

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_HEAD = "| what | default namespace | tenant `acme` |"
PARTITIONS = 16
FLOW_ID = "0b6f2c1e9a4d4e0f8c3b7a5d2e1f0a9b"
ACTION, WORKFLOW = "charge", "order"

KEY_OF: dict[str, Callable[[Keys, int], str]] = {
    "a run": lambda keys, _: keys.run(FLOW_ID).run,
    "its history": lambda keys, _: keys.run(FLOW_ID).history,
    "a queue": lambda keys, partition: keys.queue(partition, ACTION),
    "the timers": lambda keys, partition: keys.timers(partition),
    "a workflow's versions": lambda keys, _: keys.workflow(WORKFLOW),
    "the action definitions": lambda keys, _: keys.actions,
    "the stored settings": lambda keys, _: keys.config,
    "the notification channel": lambda keys, _: keys.notify_channel,
}


def section() -> str:
    text = README.read_text()
    start = text.index("### Tenants")
    return text[start : text.index("\n## ", start)]


def key_table() -> dict[str, tuple[str, str]]:
    lines = section().split(TABLE_HEAD, 1)[1].strip().splitlines()[1:]
    rows: dict[str, tuple[str, str]] = {}
    for line in lines:
        if not line.startswith("|"):
            break
        what, default, acme = (cell.strip().strip("`") for cell in line.strip("|").split("|"))
        rows[what] = (default, acme)
    return rows


def filled(template: str, partition: int) -> str:
    return (
        template.replace("{pN}", f"{{p{partition}}}")
        .replace("<flowId>", FLOW_ID)
        .replace("<action>", ACTION)
        .replace("<name>", WORKFLOW)
    )


def test_the_table_of_keys_is_the_layout_of_keys_py() -> None:
    rows = key_table()
    assert set(rows) == set(KEY_OF)
    default, acme = Keys(PARTITIONS), Keys(PARTITIONS, "acme")
    partition = default.partition_of(FLOW_ID)
    for what, (default_key, acme_key) in rows.items():
        assert KEY_OF[what](default, partition) == filled(default_key, partition), what
        assert KEY_OF[what](acme, partition) == filled(acme_key, partition), what


def test_the_stated_rules_are_the_code_s() -> None:
    text = section()
    assert f"`{NAMESPACE_PATTERN.pattern}`" in text
    assert f"`{TENANTS}`" in text
    for name in ("acme", "globex", "a.b-c_d", "x" * 64):
        assert NAMESPACE_PATTERN.fullmatch(name), name
    for name in ("a:b", "{p0}", "-a", "", "x" * 65):
        assert not NAMESPACE_PATTERN.fullmatch(name), name
    servers = re.findall(r"ORCHY_NAMESPACE=(\S+) ", text)
    assert servers == ["acme", "globex"]
    assert all(NAMESPACE_PATTERN.fullmatch(name) for name in servers)
