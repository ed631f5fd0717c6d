"""Mutation checks of the Lua scripts (run by hand, not collected by pytest)."""
