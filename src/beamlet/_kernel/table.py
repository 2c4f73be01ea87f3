"""The process table: pid number -> process record.

Under the GIL it is one dict: only one thread runs at a time, and a dict's
methods are the cheapest lookups there are (a send does one).

On a free-threaded build one dict would be a lock every spawn and every exit
of every scheduler takes, and, worse, held while the dict grows: growing a
dict of 700,000 processes takes 30 ms, 1.4 million 57 ms (3.13t, measured),
during which every other scheduler that spawns or exits waits; if the thread
growing it is a runaway's, lowered in priority, the wait was seen to last
250 ms. :class:`ShardedTable` spreads the processes over ``SHARDS`` dicts by
the pid number's block (``n >> 8``: each scheduler takes its pid numbers in
blocks of 256, PID_BLOCK), so a scheduler spawning writes one shard
while another scheduler writes another, and each dict grows a 64th of the way.
(Sharding by the low bits instead, both schedulers wrote every shard: skynet
100k on 3.13t took 1.00 s with two schedulers instead of 0.74-0.79, against
1.17-1.32 with one.) Lookups in a dict take no lock there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beamlet._kernel.process import Process

#: Dicts of a sharded table (a power of two).
SHARDS = 64
_MASK = SHARDS - 1
#: Pid numbers a scheduler takes at once (Runtime._spawn); a block goes to one shard.
PID_BLOCK = 256
_BLOCK_BITS = PID_BLOCK.bit_length() - 1


class ShardedTable:
    """The methods of a ``dict[int, Process]`` the kernel uses, over SHARDS dicts."""

    __slots__ = ("shards",)

    def __init__(self) -> None:
        self.shards: list[dict[int, Process]] = [{} for _ in range(SHARDS)]

    def get(self, n: int) -> Process | None:
        return self.shards[(n >> _BLOCK_BITS) & _MASK].get(n)

    def __getitem__(self, n: int) -> Process:
        return self.shards[(n >> _BLOCK_BITS) & _MASK][n]

    def __setitem__(self, n: int, proc: Process) -> None:
        self.shards[(n >> _BLOCK_BITS) & _MASK][n] = proc

    def pop(self, n: int, default: None = None) -> Process | None:
        return self.shards[(n >> _BLOCK_BITS) & _MASK].pop(n, default)

    def values(self) -> Iterator[Process]:
        """A snapshot, shard by shard (each copied at once: safe while others
        spawn and exit; a process spawned meanwhile may be missed)."""
        for shard in self.shards:
            yield from list(shard.values())

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def held(self) -> tuple[object, ...]:
        """What every scheduler reads: each holds these for its life (see
        Scheduler.loop)."""
        return (self, self.shards, *self.shards)

    def __bool__(self) -> bool:
        return any(self.shards)


ProcessTable = dict[int, "Process"] | ShardedTable


def make_table(sharded: bool) -> ProcessTable:
    return ShardedTable() if sharded else {}
