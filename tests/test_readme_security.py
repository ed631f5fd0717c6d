"""The README's Security section held to its word: the keys ``orchy auth new-key`` makes, as
its examples make them (printed, or appended to a keys file), work against a server reading
that file, with the roles and action names they were given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from tests.helpers.auth import bearer
from tests.helpers.cli import ROOT, orchy_in
from tests.helpers.http import serving

README = ROOT / "README.md"
NEW_OPERATOR_KEY = "orchy auth new-key --name ci --role operator"
NEW_WORKER_KEY = (
    "orchy auth new-key --name resizer --role worker --actions resize,thumbnail --append keys.jsonl"
)
SERVE = "ORCHY_API_KEYS_FILE=keys.jsonl orchy serve"
CURL = 'curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8080/flow'


def test_the_readme_shows_these_commands() -> None:
    text = README.read_text()
    for command in (NEW_OPERATOR_KEY, NEW_WORKER_KEY, SERVE, CURL):
        assert command in text, command


async def test_keys_made_as_the_readme_shows_work_with_their_roles(
    tmp_path: Path, settings: Settings, redis_client: Any
) -> None:
    printed = await orchy_in(tmp_path, *NEW_OPERATOR_KEY.split()[1:])
    assert printed.code == 0, printed.stderr
    lines = dict(line.split(":", 1) for line in printed.stdout.splitlines())
    key = lines["key"].strip()
    entry = json.loads(lines["entry"])
    assert entry["role"] == "operator" and "sha256" in entry
    assert key not in lines["entry"]
    (tmp_path / "keys.jsonl").write_text(json.dumps(entry) + "\n")

    appended = await orchy_in(tmp_path, *NEW_WORKER_KEY.split()[1:])
    assert appended.code == 0, appended.stderr
    worker_key = appended.stdout.strip()
    assert worker_key not in (tmp_path / "keys.jsonl").read_text()

    keyed = settings.model_copy(update={"api_keys_file": str(tmp_path / "keys.jsonl")})
    with serving(keyed) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.get("/flow", headers=bearer(key))).status_code == 200
            assert (await http.get("/flow")).status_code == 401
            poll = {"workerId": "w", "actions": ["resize"], "max": 1, "waitSeconds": 0}
            polled = await http.post("/tasks/poll", json=poll, headers=bearer(worker_key))
            assert polled.status_code == 200
            poll["actions"] = ["resize", "transcode"]
            refused = await http.post("/tasks/poll", json=poll, headers=bearer(worker_key))
            assert refused.status_code == 403 and "transcode" in refused.json()["error"]
            denied = await http.get("/flow", headers=bearer(worker_key))
            assert denied.status_code == 403
