"""fp32 against int8, per format, on ImageNet-size CNNs: latency and size ratios from one run.

For each model (random weights, eval mode, input 1x3x224x224 float32) this exports fp32 ONNX,
OpenVINO IR and .tflite, quantizes each to int8 with the toolkit's own quantizer for that format
(QuantizeConfig defaults), then times every artifact with `compress.bench.bench` (the agent that
`compress bench` uses) on its runtime and prints the speed-up and size ratio. Everything is made in
a temporary folder and measured in this one run; a format that fails to convert gets a row saying so.

    python benchmarks/formats_int8_speedup.py [--models resnet18,mobilenet_v2] [--threads 2]
        [--warmup 10] [--min-runs 50] [--min-seconds 3] [--rounds 3] [--calibration 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

INPUT_NAME = "input"
# format -> the runtime that times it
FORMATS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}


def build_model(name: str) -> Any:
    from compress.zoo import vision

    factories: dict[str, Callable[[], Any]] = {"resnet18": vision.resnet18, "mobilenet_v2": vision.mobilenet_v2}
    if name not in factories:
        raise SystemExit(f"unknown model {name!r} (known: {', '.join(factories)})")
    return factories[name]().eval()


def _error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def make_artifacts(model_name: str, folder: Path, calibration: Any, log: Callable[[str], None]
                   ) -> dict[tuple[str, str], Path | str]:
    """{(format, precision): model file to bench, or the error that stopped it}."""
    import torch

    from compress import formats
    from compress.recipe import QuantizeConfig

    torch.manual_seed(0)
    model = build_model(model_name)
    example = torch.from_numpy(calibration[:1].copy())
    config = QuantizeConfig()
    out: dict[tuple[str, str], Path | str] = {}

    def step(key: tuple[str, str], make: Callable[[], Path]) -> None:
        started = time.perf_counter()
        try:
            out[key] = make()
            log(f"  {model_name} {key[0]} {key[1]}: {time.perf_counter() - started:.1f} s")
        except Exception as exc:
            out[key] = _error(exc)
            log(f"  {model_name} {key[0]} {key[1]} FAILED: {out[key]}")
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()

    # Each format's plugin, as a run uses it: ONNX (dynamo export, ONNX Runtime static QDQ), OpenVINO
    # (IR, NNCF), TFLite (litert-torch, its PT2E int8 path from the torch model).
    for fmt in ("onnx", "openvino", "tflite"):
        exported: dict[str, Path] = {}

        def fp32(fmt: str = fmt, exported: dict[str, Path] = exported) -> Path:
            exported["fp32"] = formats.export(fmt, model, example, folder / f"{fmt}_fp32",
                                              input_names=[INPUT_NAME]).path
            return _bench_file(exported["fp32"])

        def int8(fmt: str = fmt, exported: dict[str, Path] = exported) -> Path:
            if "fp32" not in exported:
                raise RuntimeError(f"no fp32 {fmt} to quantize")
            path = formats.quantize(fmt, exported["fp32"], model, folder / f"{fmt}_int8", config, calibration,
                                    input_names=[INPUT_NAME]).path
            return _bench_file(path)

        step((fmt, "fp32"), fp32)
        step((fmt, "int8"), int8)
    return out


def _bench_file(path: Path) -> Path:
    """The file `compress bench` takes: an IR folder's .xml, else the artifact itself."""
    return path / "model.xml" if path.is_dir() else path


def size_mb(model_file: Path) -> float:
    """The bytes a device needs: the file, or for an IR its .xml and .bin."""
    files = [model_file, model_file.with_suffix(".bin")] if model_file.suffix == ".xml" else [model_file]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def time_p50(model_file: Path, runtime: str, args: argparse.Namespace) -> tuple[float | None, str]:
    """p50 ms through compress.bench (the same request `compress bench` sends), or the error."""
    from compress.bench import bench

    rows = bench(model_file, runtime=runtime, threads=[args.threads], batch=1, warmup=args.warmup,
                 min_runs=args.min_runs, min_seconds=args.min_seconds, input_shapes={})
    response = rows[0].response
    if not response.get("latency"):
        return None, f"{response.get('status', 'failed')}: {response.get('error')}"
    return response["latency"]["p50_ms"], "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="time fp32 and int8 alternately this many times; report the median p50")
    parser.add_argument("--calibration", type=int, default=32, help="random N(0,1) calibration samples")
    args = parser.parse_args()

    import numpy as np

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    calibration = np.random.default_rng(0).standard_normal((args.calibration, 3, 224, 224)).astype(np.float32)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compress-int8-speedup-") as scratch:
        for model_name in [m.strip() for m in args.models.split(",") if m.strip()]:
            log(f"{model_name}: converting")
            made = make_artifacts(model_name, Path(scratch) / model_name, calibration, log)
            for fmt, runtime in FORMATS.items():
                fp32, int8 = made[(fmt, "fp32")], made[(fmt, "int8")]
                times: dict[str, list[float]] = {"fp32": [], "int8": []}
                notes = [f"{p} {v}" for p, v in (("fp32", fp32), ("int8", int8)) if isinstance(v, str)]
                for _ in range(args.rounds):
                    for precision, path in (("fp32", fp32), ("int8", int8)):
                        if isinstance(path, str):
                            continue
                        p50, status = time_p50(path, runtime, args)
                        log(f"  {model_name} {runtime} {precision}: p50 {p50} ms ({status})")
                        if p50 is None:
                            notes.append(f"{precision} bench {status}")
                        else:
                            times[precision].append(p50)
                rows.append({
                    "model": model_name, "runtime": runtime,
                    "fp32_ms": statistics.median(times["fp32"]) if times["fp32"] else None,
                    "int8_ms": statistics.median(times["int8"]) if times["int8"] else None,
                    "fp32_mb": None if isinstance(fp32, str) else size_mb(fp32),
                    "int8_mb": None if isinstance(int8, str) else size_mb(int8),
                    "notes": "; ".join(dict.fromkeys(notes))})

    def cell(value: float | None, fmt: str, unit: str = "") -> str:
        return "-" if value is None else format(value, fmt) + unit

    print(f"\nbatch 1, threads {args.threads}, warmup {args.warmup}, min_runs {args.min_runs}, "
          f"min_seconds {args.min_seconds}, rounds {args.rounds} (median p50 of rounds); "
          f"{time.perf_counter() - started:.0f} s in all")
    header = (f"| {'model':<12} | {'runtime':<11} | {'fp32 p50 ms':>11} | {'int8 p50 ms':>11} | {'speed-up':>8} | "
              f"{'fp32 MB':>8} | {'int8 MB':>8} | {'size ratio':>10} | notes |")
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        speedup = row["fp32_ms"] / row["int8_ms"] if row["fp32_ms"] and row["int8_ms"] else None
        ratio = row["fp32_mb"] / row["int8_mb"] if row["fp32_mb"] and row["int8_mb"] else None
        print(f"| {row['model']:<12} | {row['runtime']:<11} | {cell(row['fp32_ms'], '.2f'):>11} | "
              f"{cell(row['int8_ms'], '.2f'):>11} | {cell(speedup, '.2f', 'x'):>8} | "
              f"{cell(row['fp32_mb'], '.2f'):>8} | {cell(row['int8_mb'], '.2f'):>8} | "
              f"{cell(ratio, '.2f', 'x'):>10} | {row['notes'] or ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
