"""How much of post-training int8's accuracy loss quantization-aware training (the `qat` stage)
wins back, per model and per format, measured on each format's own runtime.

For each model, two `compress run`s on one output folder (the trained original is cached and
shared): `stages: []` makes post-training int8 of the original in every format; `stages: [qat]`
fine-tunes it with NNCF's int8 fake quantization first, then the same quantizers make int8 of
that. Top-1 is on the test split, which neither training nor calibration sees.

    python benchmarks/qat_recovery.py [--models outlier,mobilenet,cnn-per-tensor] [--epochs 3]
        [--lr 1e-4] [--out DIR]
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_OF = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}
DIGITS_INPUT = {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}

MODELS: dict[str, dict[str, Any]] = {
    # one channel of a hidden activation x1000: per-tensor int8 activations collapse (recipes/outlier-digits.yaml)
    "outlier": {"factory": "compress.zoo.digits:DigitsCNNOutlier", "kwargs": {"width": 32, "outlier": 1000.0},
                "train": {"epochs": 15, "lr": 0.003, "batch_size": 64}, "per_channel": True},
    "mobilenet": {"factory": "compress.zoo.digits:DigitsMobileNet", "kwargs": {"width": 32, "last": 128},
                  "train": {"epochs": 20, "lr": 0.003, "batch_size": 64}, "per_channel": True},
    "cnn-per-tensor": {"factory": "compress.zoo.digits:DigitsCNN", "kwargs": {"width": 64},
                       "train": {"epochs": 15, "lr": 0.003, "batch_size": 64}, "per_channel": False},
}


def recipe(name: str, spec: dict[str, Any], qat: dict[str, Any] | None) -> dict[str, Any]:
    return {"schema_version": 1, "name": name, "seed": 0,
            "model": {"factory": spec["factory"], "kwargs": spec["kwargs"], "input": DIGITS_INPUT,
                      "train": spec["train"]},
            "data": {"source": "digits", "batch_size": 64}, "task": {"kind": "classification", "metric": "top1"},
            "stages": [{"qat": qat}] if qat is not None else [],
            "quantize": {"precision": "int8", "calibration": {"samples": 128, "method": "minmax"},
                         "per_channel": spec["per_channel"]},
            "export": ["onnx", "openvino", "tflite"],
            "verify": {"runtimes": ["torch", "onnxruntime", "openvino", "litert"],
                       "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]}}}


def run(path: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "compress.cli", "run", str(path), "--out", str(out)],
                          capture_output=True, text=True)
    printed = [line for line in done.stdout.splitlines() if line.startswith("results: ")]
    if not printed:  # a run whose parity fails still writes its results (exit 1)
        raise SystemExit(f"{path}: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(Path(printed[0].removeprefix("results: ")).read_text())


def top1(results: dict[str, Any], artifact: str, runtime: str) -> float:
    return next(m["metric"]["top1"] for m in results["measurements"]
                if m["artifact"] == artifact and m["runtime"] == runtime and m["status"] == "ok")


def cpu_flags() -> str:
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni"}
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags.split(":", 1)[1].split() if f in wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import yaml

    out = args.out or Path(tempfile.mkdtemp(prefix="qat-recovery-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        spec = MODELS[name]
        started = time.perf_counter()
        both = {}
        for tag, qat in (("ptq", None), ("qat", {"epochs": args.epochs, "lr": args.lr})):
            path = out / f"{name}-{tag}.yaml"
            path.write_text(yaml.safe_dump(recipe(name, spec, qat), sort_keys=False))
            both[tag] = run(path, out / "runs")
        info = next(a for a in both["qat"]["artifacts"] if a["name"] == "qat")["info"]
        print(f"{name}: two runs in {time.perf_counter() - started:.0f} s; NNCF simulated int8 on the validation "
              f"split: {info['validation_metric']}", file=sys.stderr, flush=True)
        fp32 = top1(both["ptq"], "original", "torch")
        for fmt, runtime in RUNTIME_OF.items():
            ptq, qat = top1(both["ptq"], f"original.int8.{fmt}", runtime), top1(both["qat"], f"qat.int8.{fmt}", runtime)
            lost = fp32 - ptq
            rows.append((name, fmt, fp32, ptq, qat, lost, (qat - ptq) / lost if lost > 0 else None))
    print(f"\nqat: {args.epochs} epochs at lr {args.lr:g}; top-1 on the test split; "
          f"{platform.processor() or platform.machine()}; CPU flags: {cpu_flags()}\n")
    print(f"{'model':15} {'format':9} {'fp32':>7} {'PTQ int8':>9} {'QAT int8':>9} {'PTQ loss':>9} {'recovered':>10}")
    for name, fmt, fp32, ptq, qat, lost, recovered in rows:
        share = "-" if recovered is None else f"{recovered:.0%}"
        print(f"{name:15} {fmt:9} {fp32:7.4f} {ptq:9.4f} {qat:9.4f} {lost:9.4f} {share:>10}")
    worst = max(rows, key=lambda r: r[5])
    print(f"\nlargest post-training loss: {worst[0]} on {worst[1]} ({worst[5]:.4f}); QAT recovered "
          f"{'-' if worst[6] is None else f'{worst[6]:.0%}'} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
