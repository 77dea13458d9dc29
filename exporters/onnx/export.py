"""torch -> ONNX with the dynamo exporter, checked with onnx.checker and against torch's outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.contracts import Exported, ExportRequest, RunOutputs
from compress.errors import StageError, refused
from compress.exporters.onnx.inspect import check_external_data

if TYPE_CHECKING:
    import torch

# protobuf caps a single file at 2 GiB; leave headroom for the graph itself.
SINGLE_FILE_LIMIT = 1_800_000_000


def _strip_debug_info(model: Any) -> None:
    """Drop per-node stack traces and source paths: kilobytes a device never needs."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def save_proto(model: Any, dest: Path) -> bool:
    """Write a converted model; its tensors go to `model.onnx.data` beside it when they would pass
    protobuf's 2 GiB cap on one file (counted from the tensors, not by serializing). Returns whether
    they did."""
    import math

    import onnx

    weight_bytes = sum(math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                       for t in model.graph.initializer)
    external = weight_bytes > SINGLE_FILE_LIMIT
    onnx.save(model, str(dest), save_as_external_data=external, location="model.onnx.data" if external else None)
    return external


def export(request: ExportRequest) -> Exported:
    dest = request.folder / "model.onnx"
    info = export_file(request.model, request.example, dest, request.input_names, request.run, request.axes())
    return Exported(path=dest, info=info)


def dynamic_shapes(model: torch.nn.Module, example: Sequence[torch.Tensor],
                   axes: list[dict[int, str]] | None) -> tuple[Any, ...]:
    """torch.export dimensions for each input's dynamic axes; an axis named alike in several inputs
    (input_ids and attention_mask's sequence) is one dimension. A non-batch axis may grow up to the
    example's size: positions past it are what the model was never declared for."""
    import torch

    axes = axes if axes is not None else [{0: "batch"} for _ in example]
    dims: dict[str, Any] = {}
    shapes = []
    for tensor, named in zip(example, axes, strict=True):
        spec = {}
        for axis, name in named.items():
            if name not in dims:
                dims[name] = torch.export.Dim(name, min=1, max=4096) if axis == 0 else \
                    torch.export.Dim(name, min=1, max=max(int(tensor.shape[axis]), 2))
            spec[axis] = dims[name]
        shapes.append(spec)
    import inspect

    parameters = list(inspect.signature(model.forward).parameters.values())
    if len(parameters) == 1 and parameters[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (tuple(shapes),)  # forward(*inputs): torch.export sees one argument, a tuple
    return tuple(shapes)


def export_file(model: torch.nn.Module, example: Sequence[torch.Tensor], dest: Path, input_names: list[str],
                run: RunOutputs, axes: list[dict[int, str]] | None = None) -> dict[str, Any]:
    """Write `dest`; each input's dynamic axes (the batch axis by default) stay dynamic. Returns
    what the export measured."""
    import numpy as np
    import onnx
    import torch

    model = model.eval()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = param_bytes > SINGLE_FILE_LIMIT
    try:
        program = torch.onnx.export(
            model, tuple(example), dynamo=True, input_names=list(input_names), output_names=["output"],
            dynamic_shapes=dynamic_shapes(model, example, axes), optimize=True, verbose=False)
        program.save(str(dest), external_data=external)
    except Exception as exc:
        raise refused("onnx", exc, "ONNX export") from None
    if not external:
        proto = onnx.load(str(dest))
        _strip_debug_info(proto)
        onnx.save(proto, str(dest))
    onnx.checker.check_model(str(dest), full_check=True)
    check_external_data(dest)
    with torch.no_grad():
        expected = model(*example)
    expected = (expected if isinstance(expected, torch.Tensor) else expected[0]).numpy()
    got = run("onnxruntime", dest, {name: t.numpy() for name, t in zip(input_names, example, strict=True)})[0]
    error = float(np.abs(got - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if not error <= 1e-4 * scale:
        raise StageError(f"ONNX output differs from torch by {error:.3g} (max abs)", field="export.onnx")
    opset = max(o.version for o in onnx.load(str(dest), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "external_data": external, "max_abs_error_vs_torch": error}
