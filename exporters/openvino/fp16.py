"""OpenVINO fp16: the fp32 IR saved with its weights compressed to float16 (OpenVINO's own fp16
IR: the CPU plugin decompresses them at load and computes in its inference precision; a GPU computes
in fp16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.contracts import Exported, Fp16Request, fp16_result, outputs_on_example
from compress.errors import tool_failure


def weight_bytes(model: Any) -> tuple[int, int]:
    """(float16 bytes, all floating-point bytes) of the model's Constant nodes."""
    import openvino as ov

    half = total = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        kind = op.get_element_type()
        if kind.is_real():
            size = int(op.get_byte_size())
            total += size
            half += size if kind == ov.Type.f16 else 0
    return half, total


def to_fp16(request: Fp16Request) -> Exported:
    import openvino as ov

    source: Path = request.source.path
    ir = request.folder / "ir"
    try:
        model = ov.Core().read_model(str(source / "model.xml"))
        ir.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(ir / "model.xml"), compress_to_fp16=True)
        saved = ov.Core().read_model(str(ir / "model.xml"))
    except Exception as exc:
        raise tool_failure("OpenVINO fp16 compression", exc, field="quantize.openvino") from None
    got, want = outputs_on_example(request.run, "openvino", ir, request.torch_model, request.example,
                                   request.input_names, "fp16 model", "quantize.openvino")
    return fp16_result(ir, "openvino", weight_bytes(saved), got, want, {
        "converter": "openvino.save_model(compress_to_fp16=True)", "route": request.source.info.get("route")})
