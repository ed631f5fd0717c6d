"""Find the ``Worker`` that ``orchy worker TARGET`` names.

TARGET is a file (``workflows/notification_worker.py``), a module (``pkg.workers``), or
either followed by ``:attr`` (``pkg.workers:worker``, ``file.py:worker``; ``attr`` may be
dotted). Without ``attr`` the module must hold exactly one ``Worker``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from orchy.worker.worker import Worker

_FILE_SUFFIX = ".py"
_FILE_MODULE_PREFIX = "_orchy_worker_"
_PATH_DIGEST_CHARS = 12
"""A file's module name carries a digest of its path: two ``worker.py`` files stay apart."""


def load_worker(target: str) -> Worker:
    """Import ``target`` and return its Worker; ValueError with the reason when impossible."""
    target = target.strip()
    if not target:
        raise ValueError("no worker given: expected a file path, 'module' or 'module:attr'")
    location, attr = _split(target)
    module = _load_file(location) if _is_file_target(location) else _import_module(location)
    if attr is None:
        return _single_worker(module, location)
    return _worker_attribute(module, location, attr)


def _split(target: str) -> tuple[str, str | None]:
    location, sep, attr = target.rpartition(":")
    # ``C:\\workers\\w.py`` has a drive colon, not an attribute.
    if not sep or not location or ("/" in attr or "\\" in attr):
        return target, None
    if not attr:
        raise ValueError(f"{target!r}: nothing after ':' (expected 'module:attr')")
    return location, attr


def _is_file_target(location: str) -> bool:
    return location.endswith(_FILE_SUFFIX) or "/" in location or "\\" in location


def _load_file(location: str) -> ModuleType:
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"worker file not found: {location}")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:_PATH_DIGEST_CHARS]
    name = f"{_FILE_MODULE_PREFIX}{_identifier(path.stem)}_{digest}"
    if (loaded := sys.modules.get(name)) is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {location}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    # As ``python file.py`` would: the file's own folder is importable (sibling helpers).
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == name or name.startswith(f"{missing}."):
            raise ValueError(f"worker module not found: {name!r}") from exc
        raise ValueError(f"cannot import {name!r}: {exc}") from exc
    except ImportError as exc:
        raise ValueError(f"cannot import {name!r}: {exc}") from exc


def _single_worker(module: ModuleType, location: str) -> Worker:
    found = {name: value for name, value in vars(module).items() if isinstance(value, Worker)}
    # One Worker bound to several names is still one worker.
    distinct = {id(worker): worker for worker in found.values()}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if not found:
        raise ValueError(f"{location} defines no Worker (expected e.g. 'worker = Worker()')")
    names = ", ".join(sorted(found))
    raise ValueError(f"{location} defines several Workers ({names}): name one as {location}:NAME")


def _worker_attribute(module: ModuleType, location: str, attr: str) -> Worker:
    value: object = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValueError(f"{location} has no attribute {attr!r}") from None
    if not isinstance(value, Worker):
        raise ValueError(f"{location}:{attr} is a {type(value).__name__}, not a Worker")
    return value
