"""Type-checks a user's file that uses the SDK, as its author would: ``mypy --strict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def assert_strict_mypy_passes(folder: Path, file_name: str, code: str) -> None:
    """Writes ``code`` to ``folder/file_name`` and asserts that ``mypy --strict`` finds no
    error in it (run from the checkout, so that ``orchy`` is this one)."""
    user_file = folder / file_name
    user_file.write_text(code)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
