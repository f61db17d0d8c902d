"""One writer per dataset: a lease object with an owner and an expiry, renewed while held.

A second run on the same OUT refuses, naming the holder; a lease whose holder stopped
renewing it (a crashed run) expires and is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from storage.fs import Root
from storage.layout import OutLayout
from storage.records import FormatError, Versioned

LEASE_VERSION = 1
TTL_SECONDS = 120.0


class LeaseHeldError(RuntimeError):
    """Another run is writing this dataset."""


@dataclass(frozen=True)
class Lease(Versioned):
    """`OUT/.lease.json`: who writes the dataset, until when (unix seconds)."""

    owner: str  # unique per run
    host: str
    pid: int
    acquired: float
    expires: float
    format_version: ClassVar[int] = LEASE_VERSION
    kind: ClassVar[str] = "lease"
    fix: ClassVar[str] = "remove it if no csdm run of this version is writing"

    def describe(self, now: float) -> str:
        """The holder in words."""
        return (
            f"run {self.owner} (pid {self.pid} on {self.host}), lease expires in "
            f"{max(0, self.expires - now):.0f} s"
        )


@dataclass(frozen=True)
class LeaseSite:
    """Where a lease lives, for roots other than a dataset's (a model registry)."""

    root: Root
    lease: str


class DatasetLease:
    """Hold OUT's lease for a block: `with DatasetLease(layout): ...`.

    A held lease is waited on for up to `wait` seconds, polled every `poll`; `clock` and
    `sleep` are injectable so tests can expire leases and wait without waiting.
    """

    def __init__(
        self,
        layout: OutLayout | LeaseSite,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        renew: bool = True,
        wait: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        poll: float = 1.0,
    ) -> None:
        self.layout, self.ttl, self.clock, self.renew = layout, ttl, clock, renew
        self.wait, self.sleep, self.poll = wait, sleep, poll
        self.owner = uuid.uuid4().hex[:12]
        self.taken_over: Lease | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _where(self) -> str:
        return self.layout.root.url_of(self.layout.lease)

    def _read(self) -> tuple[Lease | None, str | None]:
        data, stamp = self.layout.root.read_stamped(self.layout.lease)
        if data is None:
            return None, stamp
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"{self._where}: not valid JSON ({e}); {Lease.fix}") from None
        return Lease.from_dict(d, self._where), stamp

    def _current(self) -> Lease | None:
        return self._read()[0]

    def _swap(self, stamp: str | None) -> bool:
        """Write our lease over the one read with `stamp`, unless someone wrote it since."""
        now = self.clock()
        lease = Lease(self.owner, socket.gethostname(), os.getpid(), now, now + self.ttl)
        data = json.dumps(lease.to_dict(), indent=1, sort_keys=True).encode()
        return self.layout.root.put_bytes_if(self.layout.lease, data, stamp)

    def _held_error(self, held: Lease, now: float, how: str = "") -> LeaseHeldError:
        return LeaseHeldError(
            f"{self.layout.root.url} is being written by {held.describe(now)}{how}; wait for "
            f"it to finish (a crashed run's lease expires by itself), or remove "
            f"{self._where} if that run is gone for sure"
        )

    def acquire(self) -> None:
        """Take the lease, waiting up to `wait` s for a holder; else `LeaseHeldError` names it."""
        start = self.clock()
        while True:
            try:
                return self._acquire(f" (waited {self.wait:.0f} s)" if self.wait else "")
            except LeaseHeldError:
                left = start + self.wait - self.clock()
                if left <= 0:
                    raise
                self.sleep(min(self.poll, left))

    def _acquire(self, waited: str) -> None:
        """One try, a compare-and-swap: of two runs starting at once exactly one gets it."""
        now = self.clock()
        held, stamp = self._read()
        if held is not None and held.owner != self.owner and held.expires > now:
            raise self._held_error(held, now, waited)
        if not self._swap(stamp):
            winner = self._current()
            if winner is None:
                raise LeaseHeldError(
                    f"{self.layout.root.url}: the lease changed while it was taken; try again"
                )
            raise self._held_error(winner, now, waited or " (it took the lease at the same moment)")
        self.taken_over = held if held is not None and held.owner != self.owner else None

    def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        current = self._current()
        if current is not None and current.owner == self.owner:
            self.layout.root.delete(self.layout.lease)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(OSError):  # a transient error: the next beat tries again
                held, stamp = self._read()
                if held is None or held.owner != self.owner:
                    return  # taken over after it expired: never overwrite the new holder
                self._swap(stamp)

    def __enter__(self) -> DatasetLease:
        self.acquire()
        if self.renew:
            self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="csdm-lease")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
