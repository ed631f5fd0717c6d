"""The README's "Browsers" and "Safe defaults", held to their word: each ``curl`` of their
examples is run against a real server started with the settings of the ``orchy serve`` line
before it, and its output must be what the ``# ->`` line under it shows; the lines
``orchy serve`` prints are the ones the README shows."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.safe_defaults import notice
from app.settings import Settings
from tests.helpers.http import ServerThread, serving
from tests.helpers.processes import PROCESS_EXIT_SECONDS, ROOT, clean_env
from tests.helpers.waiting import unique

README = ROOT / "README.md"
README_SERVER = "http://127.0.0.1:8080"
README_WORKFLOW = "hello"
ELLIPSIS = "..."
CURL_SECONDS = 10.0


def section(title: str) -> str:
    """The README's ``### title`` section, up to the next heading."""
    text = README.read_text()
    start = text.index(f"\n### {title}\n")
    return text[start : re.compile(r"\n##+ ").search(text, start + 1).end()]  # type: ignore[union-attr]


def bash_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)]


def serve_settings(line: str) -> dict[str, str]:
    """The ``ORCHY_X=value`` variables before ``orchy serve``, as settings' field names."""
    words = shlex.split(line.split("#")[0])
    assigned = words[: words.index("orchy")]
    return {
        name.removeprefix("ORCHY_").lower(): value
        for name, value in (w.split("=", 1) for w in assigned)
    }


def expected_after(lines: list[str], index: int) -> list[str]:
    """The ``# -> ...`` lines right under ``lines[index]``."""
    shown = []
    for line in lines[index + 1 :]:
        if not line.startswith("# -> "):
            break
        shown.append(line.removeprefix("# -> "))
    return shown


def matches(output: str, shown: str) -> bool:
    if shown.endswith(ELLIPSIS):
        return shown.removesuffix(ELLIPSIS) in output
    return shown in output


def run_curl(line: str, server: ServerThread, folder: Path, name: str) -> str:
    command = shlex.split(line.replace(README_SERVER, server.url))
    done = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=CURL_SECONDS, check=True
    )
    return done.stdout.replace(name, README_WORKFLOW)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_the_browsers_examples_answer_what_the_readme_shows(
    settings: Settings, redis_client: Any, tmp_path: Path
) -> None:
    name = unique(README_WORKFLOW)
    definition = {
        "name": name,
        "rootAction": 1,
        "actions": [{"id": 1, "type": "user", "name": "greet", "parameters": {}}],
    }
    (tmp_path / "workflow.json").write_text(json.dumps(definition))
    checked = 0
    for lines in bash_blocks(section("Browsers")):
        [serve_line] = [line for line in lines if "orchy serve" in line]
        with serving(settings.model_copy(update=serve_settings(serve_line))) as server:
            for index, line in enumerate(lines):
                if not line.startswith("curl "):
                    continue
                output = run_curl(line, server, tmp_path, name)
                shown = expected_after(lines, index)
                assert shown, f"no '# ->' line under {line}"
                for expected in shown:
                    assert matches(output, expected), (line, expected, output)
                checked += 1
    assert checked >= 4


def test_serve_on_every_interface_prints_the_refusal_the_readme_shows(tmp_path: Path) -> None:
    lines = bash_blocks(section("Safe defaults"))[0]
    index = lines.index("orchy serve --host 0.0.0.0")
    shown = lines[index + 1].removeprefix("# ")

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *shlex.split(lines[index])[1:]],
        cwd=ROOT,
        env=clean_env(ORCHY_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=PROCESS_EXIT_SECONDS,
    )

    assert done.returncode == 1
    assert done.stderr.splitlines() == [shown]


def test_the_lines_of_an_open_server_are_the_ones_the_readme_shows() -> None:
    lines = bash_blocks(section("Safe defaults"))[0]
    warnings = [line.removeprefix("# WARNING:  ") for line in lines if "WARNING:" in line]

    assert warnings == [
        notice(Settings(host="0.0.0.0", port=8080, insecure=True)),
        notice(Settings(host="127.0.0.1")),
    ]
    assert notice(Settings(host="0.0.0.0", api_keys_file="keys.json")) is None
