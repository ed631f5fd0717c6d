"""Packages the `orchy` folder: the repository's (../../orchy) when building from a checkout,
the copy inside the sdist when building a wheel from one. Nothing is copied into git."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "orchy"


class OrchySourceHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        unpacked = root / PACKAGE
        source = unpacked if unpacked.is_dir() else root.parent.parent / PACKAGE
        if not (source / "__init__.py").is_file():
            raise FileNotFoundError(f"the orchy package is neither in {unpacked} nor {source}")
        build_data["force_include"][str(source.resolve())] = PACKAGE
