"""``ORCHY_LOG_FORMAT=json``: every line ``orchy serve`` writes is one JSON object with time,
level, logger and message (and its fields: an access line's method, path and status), from
uvicorn's loggers and Orchy's alike, from its start to its stop."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from tests.helpers.definitions import user, workflow
from tests.helpers.http import api_of
from tests.helpers.processes import Processes, clean_env
from tests.helpers.waiting import unique

KEYS = {"time", "level", "logger", "message"}


async def test_the_server_logs_json_lines(processes: Processes, tmp_path: Path) -> None:
    env = clean_env(
        ORCHY_DATA_DIR=str(tmp_path / "data"), ORCHY_LOG_FORMAT="json", ORCHY_ACCESS_LOG="true"
    )
    server = processes.server(env, tmp_path / "server.log")
    await server.start()
    name = unique("json-logs")
    async with api_of(server.url) as api:
        await api.register(workflow(name, user(1, name)))
        flow_id = await api.start(name)
        task = await api.poll_one(name)
        assert (await api.fail(task["taskId"], "no luck", retryable=False)).status_code == 200
        await api.wait_status(flow_id, "FAILED")
    await server.terminate()

    lines = [line for line in server.log_tail(None).splitlines() if line.strip()]
    entries: list[dict[str, Any]] = [json.loads(line) for line in lines]  # each one JSON
    for entry in entries:
        assert set(entry) >= KEYS, entry
        assert datetime.datetime.fromisoformat(entry["time"]).tzinfo is not None
    loggers = {entry["logger"] for entry in entries}
    assert {"uvicorn.error", "uvicorn.access", "orchy.server", "orchy.runs"} <= loggers, loggers
    [access] = [
        entry
        for entry in entries
        if entry["logger"] == "uvicorn.access" and entry.get("path") == "/flow/execute"
    ]
    assert access["method"] == "POST" and access["status"] == 201
    [failed] = [
        entry for entry in entries if flow_id in entry["message"] and "FAILED" in entry["message"]
    ]
    assert failed["level"] == "WARNING" and failed["logger"] == "orchy.runs"
    assert any(entry["message"] == "Application shutdown complete." for entry in entries)
