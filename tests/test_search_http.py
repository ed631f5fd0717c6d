"""GET /flow's filters and cursor over a real server, with the HTTP worker protocol doing
the work; the ``searchable`` rules of a definition; entries leaving with retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store import Store
from app.store.keys import Keys
from app.store.search import RunQuery
from tests.helpers.cluster import private_cluster
from tests.helpers.definitions import system, user, workflow
from tests.helpers.http import Api, api_of, serving
from tests.helpers.waiting import unique, wait_until

SEARCHABLE = ["$.input.email", "$.input.customer.tier", "$.vars.orderId"]


def searchable_workflow(name: str) -> dict[str, Any]:
    work = user(1, f"{name}-work")
    work["setVars"] = [{"var": "orderId", "op": "assign", "value": "{$.output.orderId}"}]
    return workflow(name, work, vars={"orderId": None}, searchable=SEARCHABLE)


async def listed(http: httpx.AsyncClient, **params: Any) -> list[str]:
    """The ids of every run GET /flow finds, following its cursor to the end."""
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await http.get("/flow", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert "search;dur=" in response.headers["server-timing"]
        ids += [run["id"] for run in page["runs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return ids


async def walked(store: Store, query: RunQuery, scan_max: int) -> list[str]:
    """Every run the store's search finds, ``scan_max`` candidates a page, to the end."""
    ids: list[str] = []
    after = None
    for _ in range(1000):
        page = await store.search.find(query, 2, after, scan_max=scan_max)
        ids += [run["id"] for run in page.runs]
        if page.next is None:
            return ids
        after = page.next
    raise AssertionError("the pages never ended")


async def test_filters_combine(api: Api, http: httpx.AsyncClient, store: Store) -> None:
    name = unique("search")
    await api.register(searchable_workflow(name))
    gold = {"email": "a@example.com", "customer": {"tier": "gold"}}
    ids = [
        await api.start(name, gold),
        await api.start(name, {"email": "a@example.com", "customer": {"tier": 2}}),
        await api.start(name, {"email": "b@example.com"}),
        await api.start(name, gold),
    ]
    newest_first = list(reversed(ids))
    # Runs 0 and 1 complete, setting orderId; run 2 is paused, run 3 terminated.
    outputs = {ids[0]: {"orderId": "A-1"}, ids[1]: {"orderId": 42}}
    tasks: list[dict[str, Any]] = []

    async def all_queued() -> bool:
        tasks.extend(await api.poll([f"{name}-work"], most=10, wait=0.5))
        return len(tasks) == len(ids)

    await wait_until(all_queued, what="every run's task")
    for task in tasks:
        if task["flowId"] in outputs:
            output = outputs[task["flowId"]]
            assert (await api.complete(task["taskId"], output)).status_code == 200
    assert (await http.post(f"/flow/{ids[3]}/terminate")).status_code == 200
    assert (await http.post(f"/flow/{ids[2]}/pause")).status_code == 200
    completed = {ids[0], ids[1]}
    for flow_id in completed:
        await api.wait_status(flow_id, "COMPLETED")

    assert await listed(http, name=name) == newest_first
    assert await listed(http, name=name, version=1) == newest_first
    assert await listed(http, name=name, version=2) == []
    email_a = "$.input.email=a@example.com"
    assert await listed(http, where=email_a) == [ids[3], ids[1], ids[0]]
    assert await listed(http, where=["$.input.customer.tier=gold", email_a]) == [ids[3], ids[0]]
    assert await listed(http, where="$.input.customer.tier=2") == [ids[1]]
    status_filtered = await listed(http, where=email_a, status="COMPLETED")
    assert status_filtered == [i for i in [ids[3], ids[1], ids[0]] if i in completed]
    assert await listed(http, name=name, status=["PAUSED", "TERMINATED"]) == [ids[3], ids[2]]
    assert await listed(http, name=name, status="PAUSED,COMPLETED") == [ids[2], ids[1], ids[0]]
    # Variables: indexed when set, the number 42 found as "42".
    assert await listed(http, where="$.vars.orderId=A-1") == [ids[0]]
    assert await listed(http, where="$.vars.orderId=42") == [ids[1]]

    # Time ranges: "after" includes its time, "before" excludes it.
    runs = {
        run["id"]: run for run in (await http.get("/flow", params={"name": name})).json()["runs"]
    }
    second_start = runs[ids[1]]["createdAt"]
    after = await listed(http, name=name, startedAfter=second_start)
    assert after[-1] == ids[1] and ids[0] not in after
    assert ids[1] not in await listed(http, name=name, startedBefore=second_start)
    ended = await listed(http, name=name, endedAfter="2000-01-01T00:00:00Z")
    assert ended == [ids[3], ids[1], ids[0]]
    assert await listed(http, name=name, endedBefore="2000-01-01T00:00:00Z") == []

    # Pages that may examine one run each (short pages, a cursor to go on) find the same.
    ended_query = RunQuery(name=name, ended_after=1)
    assert await walked(store, ended_query, scan_max=1) == [ids[3], ids[1], ids[0]]
    assert await walked(store, ended_query, scan_max=10_000) == [ids[3], ids[1], ids[0]]
    email_query = RunQuery(values=(("input.email", "a@example.com"),), statuses=("COMPLETED",))
    assert await walked(store, email_query, scan_max=1) == [ids[1], ids[0]]

    # Resuming moves the run back to RUNNING.
    assert (await http.post(f"/flow/{ids[2]}/resume")).status_code == 200
    assert ids[2] not in await listed(http, name=name, status="PAUSED")
    assert ids[2] in await listed(http, name=name, status="RUNNING")


async def test_cursor_pages_have_no_duplicates_or_gaps_while_runs_start(
    api: Api, http: httpx.AsyncClient
) -> None:
    name = unique("pages")
    await api.register(workflow(name, system(1, "delay", delaySeconds=0)))
    response = await http.post("/flow/execute/many", json={"name": name, "inputs": [{}] * 23})
    first = response.json()["flowIds"]
    before = (await http.get("/flow", params={"name": name, "limit": 500})).json()["runs"]
    assert len(before) == 23
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"name": name, "limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/flow", params=params)).json()
        seen += [run["id"] for run in page["runs"]]
        pages += 1
        # New runs start between pages: they are newer than any cursor, so never listed.
        await api.start(name)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == [run["id"] for run in before]
    assert set(seen) == set(first)
    # offset still works (a cursor is cheaper).
    page = (await http.get("/flow", params={"name": name, "offset": 3, "limit": 2})).json()
    assert page["offset"] == 3 and len(page["runs"]) == 2


@pytest.mark.parametrize(
    ("searchable", "fragment"),
    [
        ("$.input.email", "searchable must be a list"),
        (["$.output.x"], "searchable[0]"),
        (["$.input"], "searchable[0]"),
        (["$.input.a:b"], "searchable[0]"),
        (["$.input.a", 7], "searchable[1]"),
        (["$.vars.undeclared"], "searchable[0]: variable 'undeclared' is not declared"),
        (["$.input.a", "$.input.a"], "searchable[1]"),
        ([f"$.input.k{i}" for i in range(9)], "ORCHY_SEARCH_MAX_PATHS"),
        (["$.input." + "k" * 300], "ORCHY_SEARCH_MAX_PATH_LENGTH"),
    ],
)
async def test_searchable_paths_are_checked_at_registration(
    http: httpx.AsyncClient, searchable: Any, fragment: str
) -> None:
    definition = workflow(unique("bad"), user(1, "x"), searchable=searchable)
    response = await http.post("/metadata/workflow", json=definition)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"where": "$.input.email"}, "where"),
        ({"where": "$.nope.x=1"}, "where"),
        ({"where": "$.input.email=" + "x" * 300}, "where"),
        ({"status": "DONE"}, "status"),
        ({"version": 1}, "version"),
        ({"cursor": "!!"}, "cursor"),
        ({"startedAfter": "yesterday"}, "startedAfter"),
        ({"endedBefore": "2026-13-01"}, "endedBefore"),
    ],
)
async def test_bad_filters_are_422(
    http: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await http.get("/flow", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(field)


async def test_index_entries_leave_with_retention(settings: Settings, store: Store) -> None:
    short = settings.model_copy(
        update={"retention_seconds": 2, "search_prune_interval_seconds": 0.2}
    )
    name = unique("retained")
    with serving(short) as server:
        async with api_of(server.url) as api:
            definition = workflow(name, user(1, f"{name}-work"), searchable=["$.input.email"])
            await api.register(definition)
            flow_id = await api.start(name, {"email": "gone@example.com"})
            kept = await api.start(name, {"email": "gone@example.com"})
            task = await api.poll_one(f"{name}-work")
            assert (await api.complete(task["taskId"], {})).status_code == 200
            ended = task["taskId"].split(".")[0]
            running = kept if ended == flow_id else flow_id
            await api.wait_status(ended, "COMPLETED")
            where = {"where": "$.input.email=gone@example.com"}
            found = (await api.http.get("/flow", params=where)).json()["runs"]
            assert {run["id"] for run in found} == {ended, running}
            keys = store.keys
            partition = keys.partition_of(ended)
            index_keys = [
                keys.runs_index(partition),
                keys.runs_by_name(partition, name),
                keys.by_version(partition, name, 1),
                keys.by_status(partition, "COMPLETED"),
                keys.by_value(partition, "input.email", "gone@example.com"),
                keys.ended(partition),
            ]

            async def pruned() -> bool:
                scores = [await store.client.zscore(key, ended) for key in index_keys]
                return all(score is None for score in scores)

            await wait_until(pruned, timeout=10, what="the ended run's entries to go")
            found = (await api.http.get("/flow", params=where)).json()["runs"]
            assert [run["id"] for run in found] == [running]


async def test_search_on_a_redis_cluster(tmp_path: Path, settings: Settings) -> None:
    with private_cluster(tmp_path / "cluster") as url:
        clustered = settings.model_copy(update={"redis_url": url, "partitions": 8})
        with serving(clustered) as server:
            async with api_of(server.url) as api:
                name = unique("clustered")
                await api.register(searchable_workflow(name))
                inputs = [{"email": f"{index % 3}@example.com"} for index in range(12)]
                response = await api.http.post(
                    "/flow/execute/many", json={"name": name, "inputs": inputs}
                )
                ids = response.json()["flowIds"]
                assert len({Keys(8).partition_of(flow_id) for flow_id in ids}) > 1
                for flow_id in ids[:4]:
                    assert (await api.http.post(f"/flow/{flow_id}/terminate")).status_code == 200
                every = await listed(api.http, name=name)
                assert sorted(every) == sorted(ids)
                whole = await api.http.get("/flow", params={"name": name, "limit": 500})
                runs = whole.json()["runs"]
                assert [run["id"] for run in runs] == every
                starts = [(run["createdAt"], run["id"]) for run in runs]
                assert starts == sorted(starts, reverse=True)  # partitions merged newest first
                zeros = await listed(api.http, where="$.input.email=0@example.com")
                assert sorted(zeros) == sorted(ids[0::3])
                ended = await listed(api.http, name=name, status="TERMINATED")
                assert sorted(ended) == sorted(ids[:4])
                running_zeros = await listed(
                    api.http, where="$.input.email=0@example.com", status="RUNNING"
                )
                assert sorted(running_zeros) == sorted(i for i in ids[0::3] if i not in ids[:4])
