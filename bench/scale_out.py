"""Scale-out benchmark: N ``orchy serve`` processes over one Redis, HTTP workers spread over
all of them, R runs of the scenario workflow (A -> [B, delay, wait] -> join -> E).

    python -m bench.scale_out [--runs 2000] [--servers 3] [--redis URL|embedded-private]
                              [--kill] [--workers-per-server 2] [--concurrency 8]

``--redis embedded-private`` (the default) starts a throw-away ``redis-server`` on a free
port; ``--redis cluster-private`` a throw-away 3-master Redis Cluster; any other value is
used as ``REDIS_URL`` (``redis://``, ``unix://``, ``redis+cluster://``; workflow and action
names are unique, nothing is flushed). ``--kill`` kills one server with ``kill -9`` once a
third of the runs finished and restarts it later. Prints the figures; exits 1 unless every
run completed with no duplicate and every timer fired once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.scenario import (
    DEFAULT_PARTITIONS,
    FaultPlan,
    Figures,
    ScenarioConfig,
    private_cluster,
    private_redis,
    run_scenario,
)

PRIVATE_REDIS = "embedded-private"
PRIVATE_CLUSTER = "cluster-private"
DEFAULTS = ScenarioConfig()
FAILURE_EXIT = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale_out", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=DEFAULTS.runs)
    parser.add_argument("--servers", type=int, default=DEFAULTS.servers)
    parser.add_argument(
        "--redis",
        default=PRIVATE_REDIS,
        help=f"a REDIS_URL, {PRIVATE_REDIS} (default) or {PRIVATE_CLUSTER}",
    )
    parser.add_argument("--workers-per-server", type=int, default=DEFAULTS.workers_per_server)
    parser.add_argument("--concurrency", type=int, default=DEFAULTS.worker_concurrency)
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--deadline", type=float, default=DEFAULTS.deadline_seconds)
    parser.add_argument("--kill", action="store_true", help="kill -9 one server mid-run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    return parser.parse_args(argv)


@contextlib.contextmanager
def redis_for(choice: str, directory: Path) -> Iterator[str]:
    if choice == PRIVATE_REDIS:
        with private_redis(directory / "redis") as url:
            yield url
    elif choice == PRIVATE_CLUSTER:
        with private_cluster(directory / "cluster") as url:
            yield url
    else:
        yield choice


def run(args: argparse.Namespace, directory: Path) -> Figures:
    config = ScenarioConfig(
        runs=args.runs,
        servers=args.servers,
        workers_per_server=args.workers_per_server,
        worker_concurrency=args.concurrency,
        partitions=args.partitions,
        deadline_seconds=args.deadline,
        fault=FaultPlan() if args.kill else None,
    )
    with redis_for(args.redis, directory) as url:
        print(f"{args.servers} servers on {url}, {args.runs} runs ...", flush=True)
        return asyncio.run(run_scenario(config, url, directory / "logs"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_logs:
        directory = Path(tempfile.mkdtemp(prefix="orchy-scale-"))
        figures = run(args, directory)
        print(f"logs in {directory / 'logs'}")
    else:
        with tempfile.TemporaryDirectory(prefix="orchy-scale-") as name:
            figures = run(args, Path(name))
    print("\n".join(figures.lines()))
    return 0 if figures.ok else FAILURE_EXIT


if __name__ == "__main__":
    sys.exit(main())
