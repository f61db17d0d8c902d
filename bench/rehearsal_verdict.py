"""Whether `make gpu-rehearse` got as far as a machine without a GPU can: exit 1 if not.

`gpu_check.json` must hold the dry run's figures, and `gpu_decode.json` must show nvCOMP
imported (its library found in the carry) and the first failure to be the missing GPU.

    python -m bench.rehearsal_verdict bench_out/rehearse
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench_out/rehearse")
    check = json.loads((out / "gpu_check.json").read_text())
    decode = json.loads((out / "gpu_decode.json").read_text())["steps"]["import"]
    problems = []
    if not check.get("dry_run") or not check.get("frames"):
        problems.append(f"gpu_check's dry run gave no figures: {sorted(check)[:8]}")
    if not str(decode.get("nvcomp_imported", "")).startswith("6."):
        problems.append(f"nvCOMP did not import from the carry: {decode.get('error')}")
    if decode.get("ok") is False and "needs a CUDA GPU" not in decode.get("error", ""):
        problems.append(f"gpu_decode failed before its first CUDA call: {decode.get('error')}")
    for p in problems:
        print(f"rehearsal: {p}")
    if problems:
        sys.exit(1)
    print("rehearsal: both device checks import and run up to their first CUDA call")


if __name__ == "__main__":
    main()
