"""Overlap downloads with processing while downloaded bytes stay within a disk budget."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class BudgetScheduler:
    """Downloads items in order, starts each one's processing as soon as it is on disk.

    A download that would push the bytes on disk over `budget` waits: the oldest item in
    processing is finished (and its bytes freed) first. The callbacks do the work:
    `download(item)` starts a transfer and returns a handle; `ready(handle)` says whether it
    ended; `wait(handle)` blocks until it does (raising its error); `process(item)` starts the
    processing and returns a job; `finish(item, job)` waits for the job and frees the item.
    """

    budget: float
    size: Callable[[Hashable], int]
    download: Callable[[Hashable], object]
    ready: Callable[[object], bool]
    wait: Callable[[object], None]
    process: Callable[[Hashable], object]
    finish: Callable[[Hashable, object], None]
    frees_disk: bool = True  # whether a finished item's bytes leave the disk
    peak: int = 0  # the most bytes on disk at once
    _on_disk: int = 0
    _downloads: dict = field(default_factory=dict)  # handle -> item, in start order
    _processing: list = field(default_factory=list)  # (item, job), oldest first

    def run(self, items: list, already_there: set) -> None:
        """Fetch (unless in `already_there`) and process every item, in order."""
        for item in items:
            while self._on_disk + self.size(item) > self.budget:
                if self._processing:
                    self._finish_oldest()
                elif self._downloads:
                    self._reap(block=True)
                else:
                    break
            if item in already_there:
                self._processing.append((item, self.process(item)))
            else:
                self._downloads[self.download(item)] = item
            self._on_disk += self.size(item)
            self.peak = max(self.peak, self._on_disk)
            self._reap(block=False)
        while self._downloads:
            self._reap(block=True)
        while self._processing:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        item, job = self._processing.pop(0)
        self.finish(item, job)
        if self.frees_disk:
            self._on_disk -= self.size(item)

    def _reap(self, block: bool) -> None:
        """Start processing finished downloads, in order; with `block`, wait for the first."""
        for handle in list(self._downloads):
            if not (block or self.ready(handle)):
                continue
            item = self._downloads.pop(handle)
            self.wait(handle)
            self._processing.append((item, self.process(item)))
            block = False
