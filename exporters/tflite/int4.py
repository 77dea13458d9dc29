"""TFLite 4-bit weights: litert-torch's dynamic recipe with INT4 blockwise weights (AI Edge
Quantizer). Fully connected weights in symmetric 4-bit blocks of 32, 64, 128 or 256; the kernels
quantize activations to int8 per call (the one int4 scheme LiteRT's runtime supports)."""

from __future__ import annotations

from pathlib import Path

from compress.contracts import Exported, Int4Request, int4_weights_result, outputs_on_example
from compress.errors import StageError, tool_failure
from compress.exporters.tflite.export import prepare_for_tflite

GROUP_SIZES = (32, 64, 128, 256)


def weight_counts(path: Path) -> tuple[int, int]:
    """(weights stored in 4 bits, all weights): constant tensors (with a buffer) of two dimensions or
    more, by their type in the flatbuffer (the interpreter reports INT4 tensors as int8)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    integers = {schema.TensorType.INT32, schema.TensorType.INT64, schema.TensorType.BOOL}
    four_bit = total = 0
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
            shape = list(tensor.shape if tensor.shape is not None else [])
            held = 0 if buffer is None else len(buffer.data) if buffer.data is not None else getattr(buffer, "size", 0)
            if not held or len(shape) < 2 or tensor.type in integers:
                continue
            count = 1
            for dim in shape:
                count *= int(dim)
            total += count
            four_bit += count if tensor.type == schema.TensorType.INT4 else 0
    return four_bit, total


def to_int4_weights(request: Int4Request) -> Exported:
    import litert_torch
    import torch
    from litert_torch.generative.quantize import quant_attrs, quant_recipes

    config = request.config
    uneven = [f"{name} ({layer.in_features} inputs)" for name, layer in request.torch_model.named_modules()
              if isinstance(layer, torch.nn.Linear) and layer.in_features % config.group_size]
    if uneven:  # the quantizer would fail deep inside, naming a mangled tensor
        raise StageError(f"LiteRT's int4 blocks of {config.group_size} must divide every fully connected layer's "
                         f"inputs: not those of {', '.join(uneven[:3])}{' ...' if len(uneven) > 3 else ''}; "
                         "choose a group_size that does", field="quantize.tflite")
    channels_last = bool(request.source.info.get("channels_last"))
    module, sample = prepare_for_tflite(request.torch_model, request.example, channels_last)
    dest = request.folder / "model.tflite"
    recipe = quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4,
                                               granularity=getattr(quant_attrs.Granularity,
                                                                   f"BLOCKWISE_{config.group_size}"))
    try:
        litert_torch.convert(module, sample, quant_config=recipe).export(str(dest))
    except Exception as exc:
        raise tool_failure("TFLite int4 conversion", exc, field="quantize.tflite") from None
    got, want = outputs_on_example(request.run, "litert", dest, module, sample, request.input_names,
                                   "int4 weights model", "quantize.tflite")
    return int4_weights_result(dest, "tflite", weight_counts(dest), got, want, {
        "quantizer": "litert_torch full_dynamic_recipe(INT4, BLOCKWISE) (AI Edge Quantizer)",
        "group_size": config.group_size, "symmetric": True, "activations": "int8 per call",
        "channels_last": channels_last, "batch": 1})
