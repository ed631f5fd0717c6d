"""The ``orchy`` command line as a user runs it: ``python -m app.cli ...`` subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.http import ServerThread

ROOT = Path(__file__).resolve().parent.parent.parent
COMMAND_SECONDS = 30.0
# Rich draws usage errors in a box; the border and the wrapping are not part of the message.
_BOX_AND_SPACE = re.compile(r"[\s│╭╮╰╯─]+")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def message(self) -> str:
        """stderr as one line, without Rich's box."""
        return _BOX_AND_SPACE.sub(" ", self.stderr).strip()


async def orchy(*args: str, server: ServerThread | str | None = None) -> Result:
    """Runs ``python -m app.cli ARGS [--server URL]`` without blocking the event loop."""
    return await orchy_in(ROOT, *args, server=server)


async def orchy_in(folder: Path, *args: str, server: ServerThread | str | None = None) -> Result:
    """``orchy`` run in ``folder`` (its current directory)."""
    command = [sys.executable, "-m", "app.cli", *args]
    if server is not None:
        command += ["--server", server if isinstance(server, str) else server.url]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())
