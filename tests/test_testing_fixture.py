"""``orchy.testing`` itself: the server it starts is a real ``orchy serve`` on its own
embedded Redis, in the folder given, gone after the block; ``running_worker`` hands a failed
``run`` back to the test."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orchy import Worker
from orchy.testing import OrchyServerProcess, running_worker, serve


def test_serve_runs_a_server_on_its_own_embedded_redis_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis URL in the environment that nothing listens on: the server must not use it.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with serve(tmp_path) as url:
        assert httpx.get(f"{url}/health").status_code == httpx.codes.OK
        assert (tmp_path / "data").is_dir()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with serve(tmp_path / "first") as url:
        taken = OrchyServerProcess(tmp_path / "second", port=int(url.rsplit(":", 1)[1]))
        with pytest.raises(RuntimeError, match="address already in use"):
            taken.start()
        assert taken.process is not None and taken.process.returncode == 1


def test_running_worker_raises_what_failed_the_worker_s_run(orchy_server: str) -> None:
    with (
        pytest.raises(ValueError, match="this worker has no actions"),
        running_worker(Worker(), orchy_server),
    ):
        pass
