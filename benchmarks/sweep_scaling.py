"""The same sweep with one and with two Ray workers, side by side in one run: wall time and ratio.

    python benchmarks/sweep_scaling.py [--recipe recipes/quickstart-sweep.yaml] [--workers 1,2]

Each sweep starts from an empty output folder (so from an empty cache: both do the same work) on a
local Ray instance; `--parallel N` lets N trials run at once. What the workers share is the
machine: on 2 cores, two trials that train at once each get one core, and latency is measured by
one queue per device (never two measurements at once), so the measuring part does not scale.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "i8mm")
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags",
                                                                                                       "Features")))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(flag for flag in line.split(":", 1)[1].split() if flag in wanted) or "none of " + ",".join(wanted)


def run_sweep(recipe: Path, workers: int, out: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "compress.cli", "sweep", str(recipe), "--out", str(out),
                           "--parallel", str(workers)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: no trial met the constraints, the sweep itself finished
        sys.exit(f"the sweep with {workers} worker(s) failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    folder = Path(next(line for line in done.stdout.splitlines() if line.startswith("sweep: "))[7:]).parent
    return seconds, json.loads((folder / "sweep.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart-sweep.yaml")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rows = []
    for workers in counts:
        with tempfile.TemporaryDirectory() as out:
            seconds, record = run_sweep(args.recipe, workers, Path(out))
        trials = record["trials"]
        busy = sum(t["seconds"] or 0 for t in trials)
        rows.append((workers, seconds, len(trials), sum(t["status"] == "ok" for t in trials), busy,
                     sorted(record["pareto"])))
    print(f"sweep {args.recipe.name}: {rows[0][2]} trials; {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs; CPU flags: {cpu_flags()}")
    print(f"{'workers':>7} {'wall s':>8} {'finished':>8} {'trial-seconds':>13} {'speed-up':>8}  Pareto set")
    for workers, seconds, total, ok, busy, pareto in rows:
        print(f"{workers:>7} {seconds:>8.1f} {ok:>4}/{total:<3} {busy:>13.1f} {rows[0][1] / seconds:>7.2f}x  {pareto}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
