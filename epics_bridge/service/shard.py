"""``--shard I/N``: split one tasks folder between N instances, each task served by exactly one.

A task's owner is chosen by rendezvous (highest-random-weight) hashing of its name: every instance
computes, for each task, a keyed digest per shard index and takes the highest. The digest is
blake2b, not Python's ``hash()`` (salted per process), so every host and every restart agrees, and
the share depends on the task names only, never on file order. Rendezvous hashing also keeps moves
small when N changes: going from N to N+1 instances moves about 1/(N+1) of the tasks, all of them to
the new instance, where ``crc32(name) % N`` would reshuffle most of them.

``auto/N`` takes I from the trailing ``-<ordinal>`` of the host name, which is how a Kubernetes
StatefulSet names its pods (``bridge-0`` ... ``bridge-{N-1}``).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..task import Task

__all__ = ["Shard", "parse", "owner", "hostname", "host_ordinal"]

_SPEC = re.compile(r"^\s*(auto|\d+)\s*/\s*(\d+)\s*$")
_ORDINAL = re.compile(r"-(\d+)$")


def _weight(name: str, index: int) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=8, key=str(index).encode()).digest()


def owner(name: str, count: int) -> int:
    """The index (0..count-1) of the instance that serves the task called ``name``."""
    return max(range(count), key=lambda index: _weight(name, index))


@dataclass(frozen=True)
class Shard:
    """This instance's share: the tasks whose :func:`owner` is ``index`` among ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return owner(name, self.count) == self.index

    def select(self, tasks: Sequence[Task]) -> List[Task]:
        return [task for task in tasks if self.owns(task.name)]


def hostname() -> str:
    """``HOSTNAME`` (a pod's name in Kubernetes), else the kernel's host name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def host_ordinal(name: str) -> Optional[int]:
    """The trailing ``-<digits>`` of a host name, or None."""
    match = _ORDINAL.search(name.strip())
    return int(match.group(1)) if match else None


def parse(text: str, host: Optional[str] = None) -> Shard:
    """``"I/N"`` or ``"auto/N"`` -> Shard; ValueError saying what is wrong and what is expected."""
    match = _SPEC.match(text)
    if not match:
        raise ValueError(f"{text!r} is not I/N or auto/N (e.g. 0/3, or auto/3 on a host named bridge-0)")
    index_text, count = match.group(1), int(match.group(2))
    if count < 1:
        raise ValueError(f"{text!r}: N must be at least 1")
    if index_text == "auto":
        name = host if host is not None else hostname()
        index = host_ordinal(name)
        if index is None:
            raise ValueError(
                f"auto/{count}: the host name {name!r} does not end in -<ordinal> "
                f"(as a StatefulSet's pod name bridge-0 does); give the index: I/{count}"
            )
        if index >= count:
            raise ValueError(
                f"auto/{count}: the host name {name!r} gives index {index}, not below {count}; more replicas than N?"
            )
        return Shard(index, count)
    index = int(index_text)
    if index >= count:
        raise ValueError(f"{text!r}: I must be 0..{count - 1}")
    return Shard(index, count)
