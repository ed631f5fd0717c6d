"""The README's Search section, run as written: its definition registered (under a name of
its own) and each of its curl queries asked of a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.helpers.http import Api
from tests.helpers.waiting import unique

ROOT = Path(__file__).resolve().parent.parent


def search_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Search\n")
    return readme[start : readme.index("\n## ", start + 1)]


def curl_queries(section: str) -> list[list[tuple[str, str]]]:
    [block] = re.findall(r"```bash\n(.*?)```", section, re.S)
    urls = re.findall(r"^curl -s '([^']+)'$", block, re.M)
    return [parse_qsl(urlsplit(f"http://{url}").query) for url in urls]


async def test_the_search_section_runs_as_written(api: Api) -> None:
    section = search_section()
    [definition_text] = re.findall(r"```json\n(.*?)```", section, re.S)
    definition = json.loads(definition_text)
    name = unique("order")
    definition["name"] = name
    action = definition["actions"][0]["name"] = f"{name}-place-order"
    await api.register(definition)
    flow_id = await api.start(name, {"email": "ann@example.com"})
    task = await api.poll_one(action)
    assert (await api.complete(task["taskId"], {"orderId": "A-1001"})).status_code == 200
    await api.wait_status(flow_id, "COMPLETED")

    queries = curl_queries(section)
    assert len(queries) == 6
    cursor = None
    for query in queries:
        params = [
            (key, name if (key, value) == ("name", "order") else value) for key, value in query
        ]
        if any(key == "cursor" for key, _ in params):
            if cursor is None:
                continue  # the example's page has no next page here
            params = [(key, cursor if key == "cursor" else value) for key, value in params]
        response = await api.http.get("/flow", params=params)
        assert response.status_code == 200, (params, response.text)
        page = response.json()
        ids = [run["id"] for run in page["runs"]]
        if ("where", "$.input.email=ann@example.com") in params:
            assert flow_id in ids
        if ("where", "$.vars.orderId=A-1001") in params:
            assert ids == [flow_id]
        cursor = page["nextCursor"]
