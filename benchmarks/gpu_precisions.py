"""fp32 against fp16 against int8 on a CUDA GPU, through the `cuda` target (the agent `compress bench`
uses), for ResNet-18 (compress.zoo.vision, random weights, input 1x3x224x224).

- ONNX fp32 (the toolkit's exporter), fp16 (onnxruntime's float16 converter, inputs and outputs
  kept float32), int8 (the toolkit's QDQ quantizer, calibrated on random N(0,1) samples), each on
  ONNX Runtime's CUDAExecutionProvider (`cuda:N`) and, where installed, TensorRT (`cuda:N?provider=
  tensorrt`; TensorRT runs the QDQ int8 graph in int8, the CUDA provider mostly dequantizes it).
- torch fp32 and fp16 (.pt2 programs) on `cuda:N`.

It needs an NVIDIA GPU, onnxruntime-gpu and a CUDA build of torch; without them each row says why
(no CPU fall back is ever timed). Everything is made in a temporary folder and timed in this run.

    python benchmarks/gpu_precisions.py [--gpu 0] [--batch 1] [--warmup 20] [--min-runs 200]
        [--min-seconds 3] [--calibration 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")


def make_models(folder: Path, calibration: Any) -> dict[str, Path | str]:
    import shutil

    import torch

    from compress import formats
    from compress.recipe import QuantizeConfig
    from compress.zoo import vision

    torch.manual_seed(0)
    model = vision.resnet18().eval()
    example = torch.from_numpy(calibration[:1].copy())
    made: dict[str, Path | str] = {}

    def step(key: str, make: Any) -> None:
        try:
            made[key] = make()
        except Exception as exc:
            made[key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        print(f"  made {key}: {made[key]}", file=sys.stderr, flush=True)

    def onnx_fp32() -> Path:
        shutil.copy(formats.export("onnx", model, example, folder / "onnx_fp32").path, folder / "fp32.onnx")
        return folder / "fp32.onnx"

    def onnx_fp16() -> Path:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(onnx.load(str(folder / "fp32.onnx")), keep_io_types=True)
        onnx.save(converted, str(folder / "fp16.onnx"))
        return folder / "fp16.onnx"

    def onnx_int8() -> Path:
        int8 = formats.quantize("onnx", folder / "fp32.onnx", model, folder / "onnx_int8", QuantizeConfig(),
                                calibration)
        shutil.copy(int8.path, folder / "int8.onnx")
        return folder / "int8.onnx"

    def torch_program(dtype: Any, name: str) -> Path:
        typed = vision.resnet18().eval()
        typed.load_state_dict(model.state_dict())
        typed = typed.to(dtype)
        torch.export.save(torch.export.export(typed, (example.to(dtype),)), str(folder / name))
        return folder / name

    step("onnx fp32", onnx_fp32)
    step("onnx fp16", onnx_fp16)
    step("onnx int8", onnx_int8)
    step("torch fp32", lambda: torch_program(torch.float32, "fp32.pt2"))
    step("torch fp16", lambda: torch_program(torch.float16, "fp16.pt2"))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--calibration", type=int, default=32)
    args = parser.parse_args()

    import numpy as np

    from compress.bench import bench
    from compress.errors import CompressError
    from compress.targets import resolve

    try:
        resolve(f"cuda:{args.gpu}").prepare()
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calibration = np.random.default_rng(0).standard_normal((args.calibration, 3, 224, 224)).astype(np.float32)
    rows: list[tuple[str, str, str, str, float | None, str]] = []
    gpu_name = "?"
    with tempfile.TemporaryDirectory(prefix="compress-gpu-precisions-") as scratch:
        made = make_models(Path(scratch), calibration)
        plan = [(f"cuda:{args.gpu}", "onnxruntime", "onnx"), (f"cuda:{args.gpu}?provider=tensorrt", "onnxruntime",
                                                               "onnx"),
                (f"cuda:{args.gpu}", "torch", "torch")]
        for target, runtime, fmt in plan:
            for precision in ("fp32", "fp16", "int8"):
                path = made.get(f"{fmt} {precision}")
                if path is None:
                    continue
                if isinstance(path, str):
                    rows.append((target, runtime, fmt, precision, None, path))
                    continue
                result = bench(path, runtime=runtime, threads=[1], batch=args.batch, warmup=args.warmup,
                               min_runs=args.min_runs, min_seconds=args.min_seconds, input_shapes={}, trust=True,
                               target=target, timeout_s=900)
                response = result[0].response
                lat = response.get("latency")
                gpu_name = ((response.get("device") or {}).get("gpu") or {}).get("name", gpu_name)
                rows.append((target, runtime, fmt, precision, lat["p50_ms"] if lat else None,
                             "ok" if lat else f"{response.get('status')}: {response.get('error')}"))
                print(f"  {target} {runtime} {precision}: {rows[-1][4:]}", file=sys.stderr, flush=True)
    print(f"ResNet-18, batch {args.batch}, on {gpu_name} (p50 ms; ratio = fp32 p50 / this p50, same target)")
    print(f"{'target':<28} {'runtime':<12} {'precision':<9} {'p50 ms':>9} {'speed-up':>9}  status")
    for target, runtime, _, precision, p50, status in rows:
        fp32 = next((r[4] for r in rows if r[0] == target and r[1] == runtime and r[3] == "fp32"), None)
        ratio = f"{fp32 / p50:.2f}x" if fp32 and p50 else "-"
        print(f"{target:<28} {runtime:<12} {precision:<9} {p50 if p50 is not None else float('nan'):>9.3f} "
              f"{ratio:>9}  {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
