"""Tests that catch mutants of the Lua scripts the other test_lua_*.py files let through
(tests/mutation/lua_catalogue.py lists the mutants).

Each test runs on a private key prefix; see test_lua_scripts.py for the helpers.
"""

from __future__ import annotations
