"""How long ``orchy serve`` takes to stop on SIGTERM with workers connected: long polls in
flight (the wait each worker's poll would otherwise hold the stop for), measured from the
signal to the process's exit. Prints numbers; asserts nothing.

    python -m bench.stop_time [--polls 16] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.orchy_bench import quiet_server

POLL_WAIT_SECONDS = 30


async def one_stop(polls: int) -> tuple[float, int]:
    """Seconds from SIGTERM to exit, and how many polls got an answer."""
    async with (
        quiet_server("orchy-stop-") as (url, server),
        httpx.AsyncClient(base_url=url, timeout=POLL_WAIT_SECONDS * 2) as http,
    ):
        body = {"workerId": "w", "actions": ["idle"], "max": 1}
        pending = [
            asyncio.create_task(
                http.post("/tasks/poll", json={**body, "waitSeconds": POLL_WAIT_SECONDS})
            )
            for _ in range(polls)
        ]
        await http.get("/health")  # answered after the polls were sent
        started = time.monotonic()
        server.terminate()
        await asyncio.to_thread(server.wait, POLL_WAIT_SECONDS * 2)
        seconds = time.monotonic() - started
        answers = await asyncio.gather(*pending, return_exceptions=True)
    answered = sum(
        1 for answer in answers if isinstance(answer, httpx.Response) and answer.is_success
    )
    return seconds, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=16)
    parser.add_argument("--trials", type=int, default=3)
    arguments = parser.parse_args()
    times = []
    for trial in range(arguments.trials):
        seconds, answered = asyncio.run(one_stop(arguments.polls))
        times.append(seconds)
        print(
            f"trial {trial + 1}: stopped in {seconds:.2f} s with {arguments.polls} long polls "
            f"in flight ({answered} answered)"
        )
    print(f"median stop: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
