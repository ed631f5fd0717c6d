"""Create one virtualenv per peer engine under bench/.venvs/<peer> and install it there.

Idempotent: a venv whose marker file lists the same requirements is left as it is, so a second
run costs nothing. None of these packages enters Orchy's own dependencies.

    python bench/peers/setup.py                 # every peer and the report venv
    python bench/peers/setup.py celery rq       # only these
    python bench/peers/setup.py --force dbos    # reinstall
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
VENVS_DIR = BENCH_DIR / ".venvs"
MARKER = ".orchy-bench-requirements"

# Versions checked to work with the scripts in this folder (Python 3.11).
REQUIREMENTS: dict[str, list[str]] = {
    "celery": ["celery[redis]==5.7.0"],
    "rq": ["rq==2.12.0"],
    "dbos": ["dbos==3.4.0"],
    "liteflow": ["liteflow-core==0.3.1"],
    "report": ["matplotlib==3.11.2"],
}


def venv_dir(peer: str) -> Path:
    return VENVS_DIR / peer


def venv_python(peer: str) -> Path:
    return venv_dir(peer) / "bin" / "python"


def is_ready(peer: str) -> bool:
    marker = venv_dir(peer) / MARKER
    if not venv_python(peer).exists() or not marker.exists():
        return False
    return marker.read_text().split() == REQUIREMENTS[peer]


def ensure(peer: str, *, force: bool = False, quiet: bool = True) -> Path:
    """Return the venv's python, creating the venv and installing the peer if needed."""
    if peer not in REQUIREMENTS:
        raise ValueError(f"unknown peer {peer!r}; known: {', '.join(REQUIREMENTS)}")
    if is_ready(peer) and not force:
        return venv_python(peer)
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    # Keep the venvs out of git and out of `git status` without touching the project's files.
    ignore = VENVS_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    target = venv_dir(peer)
    (target / MARKER).unlink(missing_ok=True)
    if not venv_python(peer).exists():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pip = [str(venv_python(peer)), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    done = subprocess.run([*pip, *REQUIREMENTS[peer]], capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "is ignored" not in line]
        raise RuntimeError(
            f"pip install {' '.join(REQUIREMENTS[peer])} failed: {' '.join(errors)[-1000:]}"
        )
    (target / MARKER).write_text("\n".join(REQUIREMENTS[peer]) + "\n")
    return venv_python(peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peers", nargs="*", help=f"default: all of {', '.join(REQUIREMENTS)}")
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    args = parser.parse_args(argv)
    failed = 0
    for peer in args.peers or list(REQUIREMENTS):
        state = "present" if is_ready(peer) and not args.force else "installing"
        print(f"{peer}: {state} ({' '.join(REQUIREMENTS[peer])})", flush=True)
        try:
            ensure(peer, force=args.force)
        except (subprocess.CalledProcessError, RuntimeError, ValueError) as exc:
            print(f"{peer}: FAILED: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
