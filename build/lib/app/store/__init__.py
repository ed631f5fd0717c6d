"""Everything that touches Redis: key names, Lua scripts, connections."""

from app.store.keys import Keys
from app.store.store import LeasedTask, PlannedOp, Store, TimerClaim

__all__ = ["Keys", "LeasedTask", "PlannedOp", "Store", "TimerClaim"]
