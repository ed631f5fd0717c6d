"""Runs the hand-made mutants of the Lua scripts (tests/mutation/lua_catalogue.py) and shows
that the tests catch each one.

    nice -n 10 python -m tests.mutation.lua_mutants [--script NAME] [--mutant ID] [--list]

The repository is copied to a temporary folder once; each mutant is applied to the copy's
script, checked to load (SCRIPT LOAD on a Redis of its own), and the mutant's tests run in the
copy (the embedded Redis, ``-x``). The working tree is never written. A mutant is ``caught``
when its tests fail, ``survived`` when they pass, ``invalid`` (a catalogue error) when its
snippet does not occur exactly once, the mutated script does not load, or pytest could not
run the tests. Exits 1 when any mutant survived or is invalid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app.store.embedded import EmbeddedRedis
from app.store.scripts import SCRIPT_NAMES
from tests.mutation.lua_catalogue import EQUIVALENT, MUTANTS, Mutant

REPOSITORY = Path(__file__).resolve().parents[2]
LUA_FOLDER = Path("app/store/lua")
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".orchy-data"
)
# The Lua tests use none of the hypothesis, schemathesis or anyio plugins, whose imports would
# cost more than most of the test runs.
PYTEST_ARGS = (
    *("-x", "-q", "--timeout", "60"),
    *("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:schemathesis"),
    *("-p", "no:hypothesispytest", "-p", "no:anyio"),
)
# A hung run of the tests (beyond pytest-timeout's own limit) counts as caught.
RUN_SECONDS = 300
STOP_SECONDS = 20
REDIS_START_SECONDS = 10.0
PYTEST_TESTS_FAILED = 1

CAUGHT = "caught"
SURVIVED = "survived"
INVALID = "invalid"


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    verdict: str
    seconds: float
    detail: str = ""


def pytest_environment(copy: Path) -> dict[str, str]:
    """The copy's packages come first, in pytest and in the servers it starts."""
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_copy_is_imported(copy: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        cwd=copy,
        env=pytest_environment(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the tests would import app from {found}, not from the copy {copy}")


def run_tests(copy: Path, tests: Sequence[str]) -> tuple[int | None, str]:
    """pytest's exit code (None when it hung) and the test that failed, or its last line."""
    # A session of its own: Ctrl-C reaches pytest only through ``interrupt``, which waits for
    # it to stop the Redis it started.
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *tests, *PYTEST_ARGS],
        cwd=copy,
        env=pytest_environment(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        interrupt(process)
        return None, f"no answer within {RUN_SECONDS} s"
    except KeyboardInterrupt:
        interrupt(process)
        raise
    lines = output.strip().splitlines()
    return process.returncode, failed_test(lines) or (lines[-1] if lines else "")


def interrupt(process: subprocess.Popen[str]) -> None:
    """Interrupts pytest as Ctrl-C would, so that its fixtures stop the Redis they started;
    kills its process group if it does not end in time."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def failed_test(lines: Sequence[str]) -> str:
    """The test that failed (or errored), from pytest's short summary, or ""."""
    for line in lines:
        verdict, _, rest = line.partition(" ")
        if verdict in ("FAILED", "ERROR"):
            return f"{verdict.lower()}: {rest.split(' - ', 1)[0]}"
    return ""


def script_sources(lua: Path, script: str) -> dict[str, str]:
    """What the loader sends for each script that ``script`` is part of (scripts.py)."""
    names = SCRIPT_NAMES if script == "common" else (script,)
    common = (lua / "common.lua").read_text()
    return {name: common + "\n" + (lua / f"{name}.lua").read_text() for name in names}


def load_error(client: Any, lua: Path, script: str) -> str:
    for name, source in script_sources(lua, script).items():
        try:
            client.script_load(source)
        except redis.ResponseError as error:
            return f"{name}.lua does not load: {error}"
    return ""


@contextmanager
def mutated(path: Path, original: str, replacement: str) -> Iterator[str]:
    """Applies the mutant to ``path`` (in the copy) and puts the text back afterwards; yields
    why it could not be applied, or ""."""
    text = path.read_text()
    count = text.count(original)
    if count != 1:
        yield f"snippet occurs {count} times"
        return
    path.write_text(text.replace(original, replacement))
    try:
        yield ""
    finally:
        path.write_text(text)


def run_mutant(copy: Path, client: Any, mutant: Mutant) -> Result:
    began = time.monotonic()
    lua = copy / LUA_FOLDER
    with mutated(lua / f"{mutant.script}.lua", mutant.original, mutant.replacement) as problem:
        problem = problem or load_error(client, lua, mutant.script)
        if problem:
            return Result(mutant, INVALID, time.monotonic() - began, problem)
        code, tail = run_tests(copy, mutant.tests)
    seconds = time.monotonic() - began
    if code is None or code == PYTEST_TESTS_FAILED:
        return Result(mutant, CAUGHT, seconds, tail)
    if code == 0:
        return Result(mutant, SURVIVED, seconds, tail)
    return Result(mutant, INVALID, seconds, f"pytest exit {code}: {tail}")


@contextmanager
def script_loader(folder: Path) -> Iterator[Any]:
    """A Redis of the runner's own, to check that each mutated script compiles."""
    embedded = EmbeddedRedis(folder)
    embedded.start(timeout_seconds=REDIS_START_SECONDS)
    client = redis.Redis.from_url(embedded.url)
    try:
        yield client
    finally:
        client.close()
        embedded.stop()


def print_table(results: Sequence[Result]) -> None:
    width = max(len(result.mutant.id) for result in results)
    print(f"\n{'mutant':<{width}}  {'result':<8}  {'secs':>5}  description")
    for result in results:
        print(
            f"{result.mutant.id:<{width}}  {result.verdict:<8}  {result.seconds:5.1f}  "
            f"{result.mutant.description}"
        )
        print(f"{'':<{width}}  {'':<8}  {'':>5}  -> {result.detail}")
    counts = {verdict: 0 for verdict in (CAUGHT, SURVIVED, INVALID)}
    for result in results:
        counts[result.verdict] += 1
    print(
        f"\n{len(results)} mutants: {counts[CAUGHT]} caught, {counts[SURVIVED]} survived, "
        f"{counts[INVALID]} invalid"
    )


def print_equivalents(scripts: set[str] | None) -> int:
    """Prints the equivalent mutants; returns how many no longer match their script."""
    shown = [e for e in EQUIVALENT if scripts is None or e.mutant.script in scripts]
    if shown:
        print(f"\n{len(shown)} equivalent mutants (not run, not counted):")
    stale = 0
    for equivalent in shown:
        mutant = equivalent.mutant
        print(f"  {mutant.id}: {mutant.description}")
        print(f"    because {equivalent.reason}")
        count = (
            (REPOSITORY / LUA_FOLDER / f"{mutant.script}.lua").read_text().count(mutant.original)
        )
        if count != 1:
            stale += 1
            print(f"    INVALID: its snippet occurs {count} times")
    return stale


def selected(scripts: set[str] | None, ids: set[str] | None) -> list[Mutant]:
    return [
        mutant
        for mutant in MUTANTS
        if (scripts is None or mutant.script in scripts) and (ids is None or mutant.id in ids)
    ]


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation.lua_mutants", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--script", action="append", help="only this script's mutants")
    parser.add_argument("--mutant", action="append", help="only this mutant (an id)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    scripts = set(arguments.script) if arguments.script else None
    ids = set(arguments.mutant) if arguments.mutant else None
    mutants = selected(scripts, ids)
    if arguments.list:
        for mutant in mutants:
            print(f"{mutant.id:<20} {mutant.description}  [{' '.join(mutant.tests)}]")
        return 1 if print_equivalents(scripts) else 0
    if not mutants:
        print("no mutant matches", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="orchy-lua-mutants-") as temporary:
        copy = Path(temporary) / "repository"
        shutil.copytree(REPOSITORY, copy, ignore=COPY_IGNORED)
        check_copy_is_imported(copy)
        baseline = sorted({test for mutant in mutants for test in mutant.tests})
        code, tail = run_tests(copy, baseline)
        if code != 0:
            print(f"the unmutated tests do not pass ({tail}): {' '.join(baseline)}")
            return 2
        results = []
        with script_loader(Path(temporary) / "redis") as client:
            for mutant in mutants:
                result = run_mutant(copy, client, mutant)
                print(f"{mutant.id}: {result.verdict} ({result.seconds:.1f} s)", flush=True)
                results.append(result)
    print_table(results)
    stale_equivalents = print_equivalents(scripts)
    return 0 if all(r.verdict == CAUGHT for r in results) and not stale_equivalents else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The copy is gone with its temporary folder; the working tree was never written.
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
