"""The pipeline's disk-budget scheduling, with instant fake downloads and processing."""

from __future__ import annotations

import pytest

from tasks.disk_budget import BudgetScheduler


def _run(sizes: dict[str, int], budget: float, there: set[str] = frozenset(), frees=True):
    log: list[str] = []
    on_disk = {"now": 0, "peak": 0}
    pending: dict[str, int] = {}

    def download(item):
        log.append(f"get {item}")
        on_disk["now"] += sizes[item]
        on_disk["peak"] = max(on_disk["peak"], on_disk["now"])
        pending[item] = 1
        return item

    def ready(handle):
        pending[handle] -= 1  # finished after being polled once
        return pending[handle] < 0

    def finish(item, job):
        log.append(f"done {item}")
        if frees:
            on_disk["now"] -= sizes[item]

    s = BudgetScheduler(
        budget,
        sizes.get,
        download,
        ready,
        lambda h: log.append(f"ok {h}"),
        lambda item: log.append(f"process {item}") or item,
        finish,
        frees_disk=frees,
    )
    s.run(list(sizes), set(there))
    return s, log, on_disk


def test_downloads_wait_for_room_and_everything_is_processed_in_order() -> None:
    sizes = {"a": 40, "b": 40, "c": 40, "d": 10}
    s, log, disk = _run(sizes, budget=90)
    assert s.peak <= 90 and disk["peak"] <= 90
    assert [x for x in log if x.startswith("done")] == ["done a", "done b", "done c", "done d"]
    # c's download starts only after a was finished and freed
    assert log.index("done a") < log.index("get c")
    assert all(log.index(f"ok {k}") < log.index(f"process {k}") for k in sizes)


def test_items_already_on_disk_are_processed_without_a_download() -> None:
    s, log, _ = _run({"a": 10, "b": 10}, budget=float("inf"), there={"a"})
    assert "get a" not in log and "process a" in log and "get b" in log
    assert s.peak == 20


def test_without_deletion_the_budget_is_not_freed() -> None:
    s, log, _ = _run({"a": 10, "b": 10, "c": 10}, budget=float("inf"), frees=False)
    assert s.peak == 30 and log.count("process a") == 1


@pytest.mark.parametrize("budget", [10, 25])
def test_an_item_bigger_than_what_is_left_waits_for_all_earlier_ones(budget: int) -> None:
    s, log, _ = _run({"a": 10, "b": 10, "c": 10}, budget=budget)
    assert s.peak <= budget
    assert log.index("done a") < log.index("get c")
