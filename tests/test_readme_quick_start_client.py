"""The README quick start's Python block, run as written (only its server address changed to
the test server's), from the repository's folder, with the notification example's worker."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

from tests.helpers.http import ServerThread

ROOT = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:8080"


def quick_start_python_block() -> str:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("### Examples")]
    [block] = re.findall(r"```python\n(.*?)```", quick_start, re.S)
    return block


def test_the_quick_start_python_block_starts_a_run_and_waits_for_its_end(
    server: ServerThread, notification_worker: subprocess.Popen[bytes]
) -> None:
    block = quick_start_python_block()
    assert README_URL in block
    printed = io.StringIO()
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block.replace(README_URL, server.url), "README.md", "exec"), {})
    finally:
        os.chdir(here)
    assert printed.getvalue().strip() == "COMPLETED"


def test_the_block_imports_nothing_of_the_server() -> None:
    block = quick_start_python_block()
    imports = re.findall(r"^(?:from|import) (\w+)", block, re.M)
    assert set(imports) == {"json", "orchy"}
