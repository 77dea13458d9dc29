"""torch -> OpenVINO IR (.xml + .bin) with openvino.convert_model.

Routes, tried in order until one converts: the torch module itself (tracing), its
torch.export ExportedProgram, then the ONNX export. Tracing fails on some modules (a
TransformerEncoder, for one) whose ExportedProgram or ONNX convert fine; the route used is recorded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from compress.contracts import Exported, ExportRequest
from compress.errors import ExportRefused, resource_error, unsupported_op

ROUTES = ("torch", "exported_program", "onnx")


def _convert(route: str, request: ExportRequest, scratch: Path) -> Any:
    import openvino as ov
    import torch

    from compress.exporters.onnx.export import dynamic_shapes, export_file

    model, example = request.model, request.example
    axes = request.axes()
    free = [[-1 if axis in named else size for axis, size in enumerate(t.shape)]
            for t, named in zip(example, axes, strict=True)]
    if route == "torch":
        return ov.convert_model(model, example_input=example if len(example) > 1 else example[0], input=free)
    if route == "exported_program":
        # The dynamic axes must be symbolic in the program itself: a program traced at batch 2 and
        # only relabelled dynamic afterwards computes garbage at other batch sizes.
        program = torch.export.export(model, tuple(example), dynamic_shapes=dynamic_shapes(model, example, axes))
        return ov.convert_model(program, input=free)
    onnx_path = scratch / "model.onnx"
    export_file(model, example, onnx_path, request.input_names, request.run, axes)
    return ov.convert_model(str(onnx_path))


def export(request: ExportRequest) -> Exported:
    """Write `folder/ir/model.xml` + `model.bin`; the IR folder is the artifact."""
    import openvino as ov

    fp16 = bool(request.options and request.options.fp16)
    failures: list[str] = []
    ops: list[str] = []
    with tempfile.TemporaryDirectory(prefix="compress-ov-") as scratch:
        for route in ROUTES:
            try:
                converted = _convert(route, request, Path(scratch))
                break
            except Exception as exc:
                running_out = resource_error(exc, "export.openvino")
                if running_out is not None:
                    raise running_out from None
                failures.append(f"{route}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                ops.append(unsupported_op(str(exc)) or "")
        else:
            op = next((o for o in ops if o), None)
            raise ExportRefused("OpenVINO conversion failed on every route" + (f" (operator {op})" if op else "")
                                + " (" + "; ".join(failures) + ")", field="export.openvino", fmt="openvino", op=op)
    for port, name in zip(converted.inputs, request.input_names, strict=True):
        port.get_tensor().set_names({name})
    converted.outputs[0].get_tensor().set_names({"output"})
    ir = request.folder / "ir"
    ir.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, str(ir / "model.xml"), compress_to_fp16=fp16)
    return Exported(path=ir, info={"route": route, "routes_failed": failures, "weights": "fp16" if fp16 else "fp32"},
                    precision="fp16" if fp16 else None)
