"""The device checks' steps: each under a time budget, its result written as it ends.

A GPU machine is lent rarely and briefly: a failure at one step must still return every
other step's figures, and the reason in one line.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path


class Steps:
    """Runs the check's steps in order, each under a time budget, writing the JSON after each.

    A step that fails or runs out of time records its error in one line and the run goes on
    to the next step that does not need it: a device run always returns what it measured.
    """

    def __init__(self, out: Path, name: str, header: dict | None = None) -> None:
        self.path = out / name
        out.mkdir(parents=True, exist_ok=True)
        self.result: dict = {**(header or {}), "steps": {}}
        self.write()

    def write(self) -> None:
        self.path.write_text(json.dumps(self.result, indent=1))

    def run(self, name: str, budget_s: int, fn) -> dict | None:
        def over(_sig, _frame):
            raise TimeoutError(f"over its {budget_s} s budget")

        t = time.monotonic()
        signal.signal(signal.SIGALRM, over)
        signal.alarm(budget_s)
        try:
            value = fn() or {}
            entry = {"ok": True, **value}
        except BaseException as e:
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            entry, value = {"ok": False, "error": f"{type(e).__name__}: {text}"}, None
        finally:
            signal.alarm(0)
        entry["seconds"] = round(time.monotonic() - t, 2)
        self.result["steps"][name] = entry
        self.write()
        print(name, json.dumps(entry), flush=True)
        return value
