"""Every Redis key and channel name. Nothing else builds a key.

Every key of a namespace (a tenant) starts with its prefix: ``orchy:`` for the default
namespace "" (the names from before namespaces), ``orchy:<namespace>:`` for another. A run,
its history, events, waiters and held results, the queue entries that point at it and its
timers all share one hash tag ``{p<N>}``: the run's partition. So each transition is one
script on one slot, and the whole store runs on Redis Cluster. Workflow and action
definitions live under the ``{meta}`` tag.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

PREFIX = "orchy"
DEFAULT_NAMESPACE = ""
# No ``{``, ``}`` (they would move a key's hash tag) nor ``:`` (one namespace's keys would
# read as another's); the same rule for tenant names, which are namespaces.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAMESPACE_RULE = "letters, digits, '_', '.', '-', at most 64, starting with a letter or digit"
# The set of the tenants a server has served: outside every namespace, so one server finds
# them all at start-up.
TENANTS = f"{PREFIX}:tenants"


def is_namespace(name: str) -> bool:
    return NAMESPACE_PATTERN.fullmatch(name) is not None


def namespace_prefix(namespace: str) -> str:
    """What every key of ``namespace`` starts with."""
    if namespace == DEFAULT_NAMESPACE:
        return f"{PREFIX}:"
    if not is_namespace(namespace):
        raise ValueError(f"namespace {namespace!r}: {NAMESPACE_RULE}")
    return f"{PREFIX}:{namespace}:"


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run, in the order the run-changing scripts take them."""

    run: str
    history: str
    timers: str
    events: str
    waiters: str
    held: str

    def as_list(self) -> list[str]:
        return [self.run, self.history, self.timers, self.events, self.waiters, self.held]


@dataclass(frozen=True)
class CorrelationKeys:
    """The correlation index of one (event, key): its waiters (a zset of ``<flow>|<seq>``
    in arrival order), its kept events (a hash: ``n``, a counter, and ``<id>`` -> the event),
    the prefix of each kept event's takers hash (``<prefix><id>``: flow -> seq) and its
    partition's timers. All under one hash tag."""

    partition: int
    waiters: str
    events: str
    takers_prefix: str
    timers: str


class Keys:
    def __init__(self, partitions: int, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.partitions = partitions
        self.namespace = namespace
        self.prefix = namespace_prefix(namespace)
        self._meta = f"{self.prefix}{{meta}}"

    def partition_of(self, flow_id: str) -> int:
        return zlib.crc32(flow_id.encode()) % self.partitions

    def _base(self, partition: int) -> str:
        return f"{self.prefix}{{p{partition}}}"

    def run_prefix(self, partition: int) -> str:
        return f"{self._base(partition)}:run:"

    def history_prefix(self, partition: int) -> str:
        return f"{self._base(partition)}:hist:"

    def run(self, flow_id: str) -> RunKeys:
        partition = self.partition_of(flow_id)
        base = self._base(partition)
        return RunKeys(
            run=f"{self.run_prefix(partition)}{flow_id}",
            history=f"{self.history_prefix(partition)}{flow_id}",
            timers=self.timers(partition),
            events=f"{base}:events:{flow_id}",
            waiters=f"{base}:waiters:{flow_id}",
            held=f"{base}:held:{flow_id}",
        )

    def queue(self, partition: int, action: str) -> str:
        return f"{self._base(partition)}:q:{action}"

    def timers(self, partition: int) -> str:
        return f"{self._base(partition)}:timers"

    def runs_index(self, partition: int) -> str:
        return f"{self._base(partition)}:runs"

    def runs_by_name(self, partition: int, name: str) -> str:
        return f"{self._base(partition)}:runs:{name}"

    def runs_by_name_prefix(self, partition: int) -> str:
        """``runs_by_name`` without the name: the prune script (search_prune.lua) appends it."""
        return f"{self._base(partition)}:runs:"

    # -- search indexes (app/store/search.py) ------------------------------------------
    # Every index is a zset of flow ids of one partition scored by the run's start (ms),
    # except ``ended`` (scored by its end). The scripts that change a run keep them (see
    # the ``ix_*`` helpers of common.lua): they read the partition's index prefix from the
    # run's ``ix`` field and append the same suffixes as the methods below.

    def index_prefix(self, partition: int) -> str:
        return f"{self._base(partition)}:ix:"

    def by_status(self, partition: int, status: str) -> str:
        return f"{self.index_prefix(partition)}s:{status}"

    def by_version(self, partition: int, name: str, version: int) -> str:
        return f"{self.index_prefix(partition)}wv:{version}:{name}"

    def by_value(self, partition: int, path: str, token: str) -> str:
        """Runs whose searchable ``path`` (``input.email``: no ``$.``, no ``:``) holds the
        value ``token`` (see app/engine/searchable.py)."""
        return f"{self.index_prefix(partition)}v:{path}:{token}"

    def ended(self, partition: int) -> str:
        """The partition's ended runs, scored by when they ended (ms)."""
        return f"{self.index_prefix(partition)}e"

    # -- correlated events (app/engine/correlation.py) ---------------------------------

    def correlation_partition(self, event: str, key: str) -> int:
        """The partition of the correlation index of (``event``, ``key``): its own hash tag,
        chosen from the pair, whatever the partitions of the runs that wait on it."""
        return self.partition_of(f"{event}\n{key}")

    def correlation(self, event: str, key: str) -> CorrelationKeys:
        r"""The keys of the correlation index of (``event``, ``key``). The pair is written
        ``<len(event)>:<event>:<key>`` so that no two pairs share a name."""
        partition = self.correlation_partition(event, key)
        base = self._base(partition)
        pair = f"{len(event)}:{event}:{key}"
        return CorrelationKeys(
            partition=partition,
            waiters=f"{base}:cw:{pair}",
            events=f"{base}:ce:{pair}",
            takers_prefix=f"{base}:ct:{pair}:",
            timers=self.timers(partition),
        )

    def delivery(self, partition: int, delivery_id: str) -> str:
        """The record of one publication of a correlated event being delivered."""
        return f"{self._base(partition)}:cd:{delivery_id}"

    def workflow(self, name: str) -> str:
        return f"{self._meta}:wf:{name}"

    @property
    def workflow_names(self) -> str:
        return f"{self._meta}:workflows"

    @property
    def actions(self) -> str:
        return f"{self._meta}:actions"

    @property
    def queue_names(self) -> str:
        """The set of user action names that registered workflows queue tasks for."""
        return f"{self._meta}:queues"

    @property
    def polls(self) -> str:
        """Action name -> when a worker last polled for it (ms)."""
        return f"{self._meta}:polls"

    @property
    def config(self) -> str:
        return f"{self._meta}:config"

    @property
    def notify_channel(self) -> str:
        return f"{self.prefix}notify"

    @property
    def tenants(self) -> str:
        """The set of recorded tenants: the same key whatever the namespace."""
        return TENANTS
