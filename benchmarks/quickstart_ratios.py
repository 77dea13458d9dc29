"""Run the quickstart with longer timings and print latency and size ratios from that one run.

    python benchmarks/quickstart_ratios.py [--threads 1,2] [--min-seconds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "compress.cli", "run", str(ROOT / "recipes" / "quickstart.yaml"),
                   "--out", out, "--set", f"verify.latency.threads=[{args.threads}]",
                   "--set", f"verify.latency.min_seconds={args.min_seconds}"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        results = json.loads(next(Path(out).glob("quickstart/*/results.json")).read_text())
    sizes = {a["name"]: a["size_bytes"] for a in results["artifacts"]}
    p50 = {(m["artifact"], m["runtime"], m["threads"]): m["latency"]["p50_ms"]
           for m in results["measurements"] if m["latency"]}
    print(f"{'comparison':<48} {'threads':>7} {'p50 a':>9} {'p50 b':>9} {'speed-up':>9}")
    pairs = [("original", "distill", "torch"), ("original.onnx", "distill.onnx", "onnxruntime"),
             ("distill.onnx", "distill.int8.onnx", "onnxruntime"),
             ("original.onnx", "distill.int8.onnx", "onnxruntime")]
    for threads in sorted({key[2] for key in p50}):
        for before, after, runtime in pairs:
            a, b = p50.get((before, runtime, threads)), p50.get((after, runtime, threads))
            if a and b:
                print(f"{before + ' -> ' + after + ' (' + runtime + ')':<48} {threads:>7} {a:>9.4f} {b:>9.4f} "
                      f"{a / b:>8.2f}x")
    print(f"size: distill.onnx / distill.int8.onnx = {sizes['distill.onnx'] / sizes['distill.int8.onnx']:.2f}x; "
          f"original.onnx / distill.int8.onnx = {sizes['original.onnx'] / sizes['distill.int8.onnx']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
