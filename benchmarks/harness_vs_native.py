"""Our `compress bench` p50 against the runtimes' own benchmark tools, on the same model files.

OpenVINO IR: OpenVINO's `benchmark_app` (its `Median:` line); .tflite: LiteRT's `litert-benchmark`
(`median_ms` of its --result_json). Same threads, batch 1, sync single request. The measurements
alternate (ours, theirs, ours, theirs, ...) for --rounds rounds and the medians are compared, so a
burst of load from another process hits both sides alike.

    python benchmarks/harness_vs_native.py [--threads 1,2] [--seconds 3] [--rounds 3] [--int8]
        [--model PATH.xml|PATH.tflite ...]

Without --model, MobileNetV2 from compress.zoo.vision (random weights) is exported to an fp32 IR and
an fp32 .tflite (with --int8 also NNCF int8 and LiteRT int8) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

BIN = Path(sys.executable).parent
_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s*(us|ms)")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def zoo_artifacts(folder: Path, int8: bool) -> list[tuple[str, Path]]:
    """(label, file) for MobileNetV2 exported with the toolkit's own exporters (and quantizers)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import torch

    from compress import formats
    from compress.recipe import QuantizeConfig
    from compress.zoo.vision import mobilenet_v2

    torch.manual_seed(0)
    model = mobilenet_v2().eval()
    calibration = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
    example = torch.from_numpy(calibration[:1].copy())
    out: list[tuple[str, Path]] = []
    ir = formats.export("openvino", model, example, folder / "ov_fp32").path
    out.append(("mobilenet_v2 fp32 .xml", ir / "model.xml"))
    tfl = formats.export("tflite", model, example, folder / "tfl_fp32").path
    out.append(("mobilenet_v2 fp32 .tflite", tfl))
    if int8:
        config = QuantizeConfig()
        ir8 = formats.quantize("openvino", ir, model, folder / "ov_int8", config, calibration).path
        out.append(("mobilenet_v2 int8 .xml", ir8 / "model.xml"))
        tfl8 = formats.quantize("tflite", tfl, model, folder / "tfl_int8", config, calibration).path
        out.append(("mobilenet_v2 int8 .tflite", tfl8))
    return out


def ours(model: Path, threads: int, args: argparse.Namespace) -> float:
    from compress.bench import bench

    runtime = "openvino" if model.suffix == ".xml" else "litert"
    rows = bench(model, runtime=runtime, threads=[threads], batch=1, warmup=args.warmup, min_runs=args.min_runs,
                 min_seconds=args.seconds, input_shapes={})
    response = rows[0].response
    if not response.get("latency"):
        raise RuntimeError(f"compress bench failed: {response.get('error')}")
    return float(response["latency"]["p50_ms"])


def input_shape(model: Path) -> str:
    """'[1,3,224,224]' with the batch set to 1 (the IRs here have a dynamic batch)."""
    import openvino as ov

    shape = ov.Core().read_model(str(model)).inputs[0].get_partial_shape()
    dims = [1 if i == 0 or d.is_dynamic else d.get_length() for i, d in enumerate(shape)]
    return "[" + ",".join(str(d) for d in dims) + "]"


def benchmark_app(model: Path, threads: int, args: argparse.Namespace, shape_flag: str) -> float:
    """benchmark_app's median (ms). `shape_flag` -data_shape keeps the IR's dynamic batch, as our
    agent compiles it; -shape reshapes it to a static batch 1 first."""
    command = [str(BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "none", "-nthreads", str(threads),
               "-nstreams", "1", "-nireq", "1", "-api", "sync", shape_flag, input_shape(model),
               "-infer_precision", "f32", "-t", str(max(1, round(args.seconds)))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    found = _MEDIAN.search(text)
    if result.returncode or not found:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise RuntimeError(f"benchmark_app failed (exit {result.returncode}): {tail}")
    value = float(found.group(1))
    return value / 1000.0 if found.group(2) == "us" else value


def litert_benchmark(model: Path, threads: int, args: argparse.Namespace, estimate_ms: float) -> float:
    """litert-benchmark's median (ms). It has no time limit, so the run count is chosen to last about
    --seconds at our own p50 (and at least --min-runs)."""
    runs = max(args.min_runs, math.ceil(args.seconds * 1000.0 / max(estimate_ms, 1e-3)))
    with tempfile.TemporaryDirectory(prefix="litert-bench-") as scratch:
        report = Path(scratch) / "result.json"
        command = [str(BIN / "litert-benchmark"), "--model", str(model), "--num_threads", str(threads),
                   "--num_runs", str(runs), "--warmup_runs", str(args.warmup), "--result_json", str(report)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode or not report.is_file():
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"litert-benchmark failed (exit {result.returncode}): {tail}")
        data = json.loads(report.read_text())
    return float(data["latency"]["median_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help=".xml (OpenVINO IR) or .tflite; repeatable")
    parser.add_argument("--threads", default="1,2", help="comma-separated, e.g. 1,2")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement, each side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--int8", action="store_true", help="also the int8 zoo artifacts (NNCF, LiteRT PT2E)")
    parser.add_argument("--static-shape", action="store_true",
                        help="also benchmark_app with -shape (IR reshaped to a static batch 1)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t.strip()]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="compress-harness-") as scratch:
        if args.model:
            models = [(Path(m).name, Path(m).resolve()) for m in args.model]
        else:
            log("exporting MobileNetV2 (compress.zoo.vision)")
            models = zoo_artifacts(Path(scratch), args.int8)
        cases: list[tuple[str, Path, str, Any]] = []
        for label, path in models:
            if path.suffix == ".xml":
                cases.append((label, path, "benchmark_app -data_shape",
                              lambda m, t, _: benchmark_app(m, t, args, "-data_shape")))
                if args.static_shape:
                    cases.append((label, path, "benchmark_app -shape (static)",
                                  lambda m, t, _: benchmark_app(m, t, args, "-shape")))
            elif path.suffix == ".tflite":
                cases.append((label, path, "litert-benchmark", lambda m, t, est: litert_benchmark(m, t, args, est)))
            else:
                raise SystemExit(f"{path}: expected .xml or .tflite")

        results: dict[tuple[int, int], dict[str, list[float]]] = {}
        errors: dict[tuple[int, int], str] = {}
        for count in threads:
            for round_index in range(args.rounds):
                for index, (label, path, tool, theirs) in enumerate(cases):
                    key = (count, index)
                    slot = results.setdefault(key, {"ours": [], "theirs": []})
                    if key in errors:
                        continue
                    try:
                        mine = ours(path, count, args)
                        other = theirs(path, count, mine)
                        slot["ours"].append(mine)
                        slot["theirs"].append(other)
                        log(f"  round {round_index + 1} threads {count} {label} {tool}: ours {mine:.3f} ms, "
                            f"theirs {other:.3f} ms")
                    except Exception as exc:
                        errors[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
                        log(f"  threads {count} {label} {tool} FAILED: {errors[key]}")

    print(f"\nbatch 1, {args.seconds:g} s per measurement, {args.rounds} rounds alternating ours/theirs "
          f"(ours/theirs = ratio of the medians; paired = median of the rounds' ratios; within: both inside "
          f"{args.tolerance:.0%}); {time.perf_counter() - started:.0f} s")
    header = (f"| {'model':<25} | {'tool':<29} | {'threads':>7} | {'ours p50 ms':>11} | {'theirs median ms':>16} | "
              f"{'ours/theirs':>11} | {'paired':>6} | {'within':>6} | rounds (ours / theirs) |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for count in threads:
        for index, (label, _path, tool, _) in enumerate(cases):
            key = (count, index)
            slot = results.get(key, {"ours": [], "theirs": []})
            if key in errors or not slot["ours"] or not slot["theirs"]:
                dashes = " | ".join(f"{'-':>{w}}" for w in (11, 16, 11, 6, 6))
                print(f"| {label:<25} | {tool:<29} | {count:>7} | {dashes} | {errors.get(key, 'no result')} |")
                continue
            mine, other = statistics.median(slot["ours"]), statistics.median(slot["theirs"])
            ratio = mine / other
            # each round's ours/theirs, measured back to back: robust to load that comes and goes
            paired = statistics.median(a / b for a, b in zip(slot["ours"], slot["theirs"], strict=True))
            within = "yes" if max(abs(ratio - 1.0), abs(paired - 1.0)) <= args.tolerance else "NO"
            detail = (" ".join(f"{v:.2f}" for v in slot["ours"]) + " / "
                      + " ".join(f"{v:.2f}" for v in slot["theirs"]))
            print(f"| {label:<25} | {tool:<29} | {count:>7} | {mine:>11.3f} | {other:>16.3f} | "
                  f"{ratio:>11.3f} | {paired:>6.3f} | {within:>6} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
