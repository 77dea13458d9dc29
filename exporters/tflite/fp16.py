"""TFLite fp16: litert-torch's fp16 recipe (AI Edge Quantizer): float16 weights, float32 inputs and
outputs; the CPU dequantizes them, a GPU delegate computes in fp16."""

from __future__ import annotations

from pathlib import Path

from compress.contracts import Exported, Fp16Request, fp16_result, outputs_on_example
from compress.errors import tool_failure
from compress.exporters.tflite.export import prepare_for_tflite


def weight_bytes(path: Path) -> tuple[int, int]:
    """(float16 bytes, all floating-point bytes) of the constant tensors: those no op computes and
    the graph is not fed."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    computed = {out for op in interpreter._get_ops_details() for out in op["outputs"]}  # public API: tensors only
    fed = {d["index"] for d in interpreter.get_input_details()}
    half = total = 0
    for tensor in interpreter.get_tensor_details():
        kind = np.dtype(tensor["dtype"])
        if kind.kind != "f" or tensor["index"] in computed or tensor["index"] in fed:
            continue
        size = int(np.prod(tensor["shape"])) * kind.itemsize
        total += size
        half += size if kind == np.float16 else 0
    return half, total


def to_fp16(request: Fp16Request) -> Exported:
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes

    channels_last = bool(request.source.info.get("channels_last"))
    module, sample = prepare_for_tflite(request.torch_model, request.example, channels_last)
    dest = request.folder / "model.tflite"
    try:
        litert_torch.convert(module, sample, quant_config=quant_recipes.full_fp16_recipe()).export(str(dest))
    except Exception as exc:
        raise tool_failure("TFLite fp16 conversion", exc, field="quantize.tflite") from None
    got, want = outputs_on_example(request.run, "litert", dest, module, sample, request.input_names,
                                   "fp16 model", "quantize.tflite")
    return fp16_result(dest, "tflite", weight_bytes(dest), got, want, {
        "converter": "litert_torch.convert(quant_config=full_fp16_recipe())", "channels_last": channels_last,
        "batch": 1})
