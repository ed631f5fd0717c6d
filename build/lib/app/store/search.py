"""Finding runs through the search indexes (the ``ix_*`` helpers of common.lua keep them).

A query walks one index, the most selective of those its filters name (fewest entries in
its start-time range, summed over partitions), newest first: in chunks per partition,
merged by (start ms, flow id). Each candidate's run hash is read with one pipelined HMGET
of a few fields, which both checks the other filters (the scripts write a run's fields and
its index entries together, so they agree) and gives the page its summaries. A run whose
hash has expired is dropped from the index it was met in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.store.coalesce import Coalescer
from app.store.keys import Keys

# The run fields a page reads: what its summaries show and what its filters check.
LISTED_FIELDS = ("id", "name", "version", "status", "createdAt", "updatedAt", "finishedAt", "ix")
# A run whose hash has expired had ended with one of these.
ENDED_STATUSES = ("COMPLETED", "FAILED", "TERMINATED")
FIRST_CHUNK = 16
MAX_CHUNK = 1024


@dataclass(frozen=True, order=True)
class Position:
    """Where a run stands in the newest-first order: its start (ms), then its id."""

    score: int
    member: str


@dataclass(frozen=True)
class RunQuery:
    """What ``GET /flow`` filters on; every time is in ms, each range [after, before)."""

    name: str | None = None
    version: int | None = None
    statuses: tuple[str, ...] = ()
    started_after: int | None = None
    started_before: int | None = None
    ended_after: int | None = None
    ended_before: int | None = None
    values: tuple[tuple[str, str], ...] = ()  # (path, token): see app/engine/searchable.py

    def matches(self, fields: dict[str, Any]) -> bool:
        if self.name is not None and fields["name"] != self.name:
            return False
        if self.version is not None and fields["version"] != str(self.version):
            return False
        if self.statuses and fields["status"] not in self.statuses:
            return False
        if self.ended_after is not None or self.ended_before is not None:
            finished = fields.get("finishedAt")
            if finished is None or not _within(int(finished), self.ended_after, self.ended_before):
                return False
        if self.values:
            indexed = orjson.loads(fields["ix"])["v"] if fields.get("ix") else {}
            if any(indexed.get(path) != token for path, token in self.values):
                return False
        return True


def _end_range(query: RunQuery) -> tuple[str, str]:
    """ZCOUNT's min and max for the query's end range, [endedAfter, endedBefore)."""
    low = "-inf" if query.ended_after is None else str(query.ended_after)
    high = "+inf" if query.ended_before is None else f"({query.ended_before}"
    return low, high


def _within(value: int, after: int | None, before: int | None) -> bool:
    return (after is None or value >= after) and (before is None or value < before)


@dataclass(frozen=True)
class Page:
    """Runs found (their ``LISTED_FIELDS``, newest first), and where the next page starts
    (None: nothing further)."""

    runs: list[dict[str, str]]
    next: Position | None


# An index entry as the walk handles it: (start ms, flow id), compared as a tuple.
Entry = tuple[int, str]


@dataclass
class _Stream:
    """One index key of one partition, read newest first in growing chunks."""

    key: str
    top: str  # ZREVRANGEBYSCORE's max ("(" for exclusive)
    bottom: str
    skip_from: Entry | None  # entries at or after this (same ms as a cursor) are skipped
    read: int = 0
    chunk: int = FIRST_CHUNK
    done: bool = False
    buffer: list[Entry] = field(default_factory=list)

    @property
    def last(self) -> Entry | None:
        return self.buffer[-1] if self.buffer else None


class RunSearch:
    def __init__(self, coalescer: Coalescer, keys: Keys) -> None:
        self.coalescer = coalescer
        self.keys = keys

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one round trip (raw replies); the first error is raised."""
        replies = await self.coalescer.execute(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _candidate_indexes(self, query: RunQuery) -> list[list[str]]:
        """For each filter with an index, the keys (every partition's) holding its runs."""
        partitions = range(self.keys.partitions)
        found: list[list[str]] = []
        if query.name is not None and query.version is not None:
            found.append([self.keys.by_version(p, query.name, query.version) for p in partitions])
        elif query.name is not None:
            found.append([self.keys.runs_by_name(p, query.name) for p in partitions])
        if query.statuses:
            found.append(
                [self.keys.by_status(p, status) for p in partitions for status in query.statuses]
            )
        for path, token in query.values:
            found.append([self.keys.by_value(p, path, token) for p in partitions])
        return found

    async def _most_selective(
        self, query: RunQuery, top: str, bottom: str, scan_max: int
    ) -> tuple[list[str], bool]:
        """The keys of the index to walk, and whether it is the ended runs' (scored by end:
        read whole, then ordered, which only a range of at most ``scan_max`` runs may be)."""
        candidates = self._candidate_indexes(query)
        by_end = query.ended_after is not None or query.ended_before is not None
        if not candidates and not by_end:
            return [self.keys.runs_index(p) for p in range(self.keys.partitions)], False
        if len(candidates) == 1 and not by_end:
            return candidates[0], False
        commands = [("ZCOUNT", key, bottom, top) for keys in candidates for key in keys]
        if by_end:
            low, high = _end_range(query)
            commands += [
                ("ZCOUNT", self.keys.ended(partition), low, high)
                for partition in range(self.keys.partitions)
            ]
        counts = [int(count) for count in await self._execute(commands)]
        totals = []
        at = 0
        for keys in candidates:
            totals.append(sum(counts[at : at + len(keys)]))
            at += len(keys)
        if by_end:
            ended = sum(counts[at:])
            if ended <= scan_max and (not totals or ended <= min(totals)):
                return [self.keys.ended(p) for p in range(self.keys.partitions)], True
        if not candidates:
            return [self.keys.runs_index(p) for p in range(self.keys.partitions)], False
        return candidates[totals.index(min(totals))], False

    async def _find_by_end(
        self, query: RunQuery, keys: list[str], limit: int, after: Position | None, skip: int
    ) -> Page:
        """The runs that ended in the query's range, read whole (few: see _most_selective)."""
        low, high = _end_range(query)
        found = await self._execute([("ZRANGEBYSCORE", key, low, high) for key in keys])
        members = [member for some in found for member in some]
        rows = await self._read([((0, member), "") for member in members])
        cursor = None if after is None else (after.score, after.member)
        matches: list[tuple[Entry, dict[str, Any]]] = []
        for member, fields in zip(members, rows, strict=True):
            if fields["id"] is None or not query.matches(fields):
                continue
            entry = (int(fields["createdAt"]), member)
            started = _within(entry[0], query.started_after, query.started_before)
            if started and (cursor is None or entry < cursor):
                fields.pop("ix", None)
                matches.append((entry, {k: v for k, v in fields.items() if v is not None}))
        matches.sort(key=lambda match: match[0], reverse=True)
        page = matches[skip : skip + limit]
        more = len(matches) > skip + limit
        return Page([fields for _, fields in page], Position(*page[-1][0]) if more else None)

    async def find(
        self,
        query: RunQuery,
        limit: int,
        after: Position | None = None,
        skip: int = 0,
        scan_max: int = 10_000,
    ) -> Page:
        """Up to ``limit`` runs matching ``query`` after ``after``, newest first, the first
        ``skip`` matches left out; at most ``scan_max`` candidates are examined (the page
        may then be short, and ``next`` says where to go on)."""
        # A run starts before it ends: endedBefore bounds its start too.
        bounds = [b for b in (query.started_before, query.ended_before) if b is not None]
        below = min(bounds) if bounds else None
        top = "+inf" if below is None else f"({below}"
        if after is not None and (below is None or after.score < below):
            top = str(after.score)
        bottom = "-inf" if query.started_after is None else str(query.started_after)
        keys, by_end = await self._most_selective(query, top, bottom, scan_max)
        if by_end:
            return await self._find_by_end(query, keys, limit, after, skip)
        # Each partition's share of the page, twice over: most pages need one read of each.
        first_chunk = min(MAX_CHUNK, max(FIRST_CHUNK, 2 * (limit + skip) // len(keys) + 1))
        skip_from = None if after is None else (after.score, after.member)
        streams = [_Stream(key, top, bottom, skip_from, chunk=first_chunk) for key in keys]
        runs: list[dict[str, str]] = []
        examined = 0
        pending: list[tuple[Entry, str]] = []  # in order, safe to examine, not read yet
        batch_size = limit + skip
        while True:
            if not pending:
                await self._refill([s for s in streams if not s.buffer and not s.done])
                pending = _ready(streams)
                if not pending:
                    return Page(runs, None)
            # Read what the page still needs (more after each batch that matched little).
            batch = pending[: min(batch_size, scan_max - examined)]
            pending = pending[len(batch) :]
            batch_size = min(batch_size * 4, MAX_CHUNK)
            rows = await self._read(batch)
            gone: dict[str, list[str]] = {}
            stop: int | None = None
            for index, ((entry, key), fields) in enumerate(zip(batch, rows, strict=True)):
                examined += 1
                if fields["id"] is None:
                    gone.setdefault(key, []).append(entry[1])
                elif query.matches(fields):
                    if skip > 0:
                        skip -= 1
                    else:
                        fields.pop("ix", None)
                        runs.append({k: v for k, v in fields.items() if v is not None})
                if len(runs) == limit or examined >= scan_max:
                    stop = index
                    break
            if gone:
                await self._forget(gone)
            if stop is not None:
                more = (
                    stop < len(batch) - 1
                    or bool(pending)
                    or any(s.buffer or not s.done for s in streams)
                )
                return Page(runs, Position(*batch[stop][0]) if more else None)

    async def _refill(self, streams: Sequence[_Stream]) -> None:
        if not streams:
            return
        replies = await self._execute(
            [
                (
                    "ZREVRANGEBYSCORE",
                    *(stream.key, stream.top, stream.bottom),
                    *("WITHSCORES", "LIMIT", stream.read, stream.chunk),
                )
                for stream in streams
            ]
        )
        for stream, reply in zip(streams, replies, strict=True):
            entries = _entries(reply)
            stream.read += len(entries)
            stream.done = len(entries) < stream.chunk
            stream.chunk = min(stream.chunk * 2, MAX_CHUNK)
            skip_from = stream.skip_from
            if skip_from is not None:
                entries = [entry for entry in entries if entry < skip_from]
            stream.buffer = entries
            if not stream.buffer and not stream.done:
                # Every entry of the chunk was skipped (same ms as the cursor): read on.
                await self._refill([stream])

    async def _read(self, ready: Sequence[tuple[Entry, str]]) -> list[dict[str, Any]]:
        replies = await self._execute(
            [("HMGET", self.keys.run(member).run, *LISTED_FIELDS) for (_, member), _ in ready]
        )
        return [dict(zip(LISTED_FIELDS, reply, strict=True)) for reply in replies]

    async def _forget(self, gone: dict[str, list[str]]) -> None:
        """Drops runs whose hash has expired (before search_prune.lua took them out) from
        the index they were met in, and from those that need no field of theirs to name:
        the all-runs, ended and terminal status indexes of their partition."""
        commands: list[tuple[Any, ...]] = []
        for key, members in gone.items():
            commands.append(("ZREM", key, *members))
            for member in members:
                partition = self.keys.partition_of(member)
                commands += [
                    ("ZREM", self.keys.runs_index(partition), member),
                    ("ZREM", self.keys.ended(partition), member),
                    *(
                        ("ZREM", self.keys.by_status(partition, status), member)
                        for status in ENDED_STATUSES
                    ),
                ]
        await self._execute(commands)


def _entries(reply: list[Any]) -> list[Entry]:
    """ZREVRANGEBYSCORE ... WITHSCORES's raw reply: [member, score] pairs (RESP3), or members
    and scores in turn (RESP2)."""
    if reply and isinstance(reply[0], list):
        return [(int(float(score)), member) for member, score in reply]
    return [(int(float(reply[i + 1])), reply[i]) for i in range(0, len(reply), 2)]


def _ready(streams: list[_Stream]) -> list[tuple[Entry, str]]:
    """The buffered entries that no unread entry can precede, newest first (each with its
    key), taken out of the buffers: everything down to the highest of the open streams'
    last buffered entries."""
    open_lasts = [s.last for s in streams if not s.done and s.last is not None]
    floor = max(open_lasts) if open_lasts else None
    ready: list[tuple[Entry, str]] = []
    for stream in streams:
        if floor is None:
            taken = stream.buffer
            stream.buffer = []
        else:
            cut = len(stream.buffer)
            while cut > 0 and stream.buffer[cut - 1] < floor:
                cut -= 1
            taken, stream.buffer = stream.buffer[:cut], stream.buffer[cut:]
        ready += [(entry, stream.key) for entry in taken]
    ready.sort(reverse=True)
    return ready


__all__ = ["LISTED_FIELDS", "Page", "Position", "RunQuery", "RunSearch"]
