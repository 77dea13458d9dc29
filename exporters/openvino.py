"""torch -> OpenVINO IR (.xml + .bin) with openvino.convert_model.

Routes, tried in order until one converts: the torch module itself (tracing), its
torch.export ExportedProgram, then the ONNX export. Tracing fails on some modules (a
TransformerEncoder, for one) whose ExportedProgram or ONNX convert fine; the route used is recorded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from exporters import ExportRefused, unsupported_op

if TYPE_CHECKING:
    import torch

ROUTES = ("torch", "exported_program", "onnx")


class OpenVinoExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fp16: bool = False  # store weights as fp16 (half the size; computed in fp32 unless the device prefers)


def _convert(route: str, model: torch.nn.Module, example: torch.Tensor, scratch: Path) -> Any:
    import openvino as ov
    import torch

    batch_free = [-1, *example.shape[1:]]
    if route == "torch":
        return ov.convert_model(model, example_input=example, input=[batch_free])
    if route == "exported_program":
        # The batch must be symbolic in the program itself: a program traced at batch 2 and only
        # relabelled dynamic afterwards computes garbage at other batch sizes.
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        return ov.convert_model(program, input=[batch_free])
    from exporters.onnx import OnnxExporter

    onnx_path = scratch / "model.onnx"
    OnnxExporter().export_file(model, example, onnx_path, "input")
    return ov.convert_model(str(onnx_path))


class OpenVinoExporter:
    name = "openvino"
    format = "openvino"
    Config = OpenVinoExportConfig
    requires = ("openvino",)
    install_hint = "pip install 'edge-compress[openvino]'"

    def __init__(self, config: OpenVinoExportConfig | None = None) -> None:
        self.config = config or OpenVinoExportConfig()

    def export(self, model: torch.nn.Module, example: torch.Tensor, folder: Path,
               input_name: str) -> tuple[Path, dict[str, Any]]:
        """Write `folder/ir/model.xml` + `model.bin`; the IR folder is the artifact."""
        import openvino as ov

        model = model.eval()
        failures: list[str] = []
        with tempfile.TemporaryDirectory(prefix="compress-ov-") as scratch:
            ops: list[str] = []
            for route in ROUTES:
                try:
                    converted = _convert(route, model, example, Path(scratch))
                    break
                except Exception as exc:
                    failures.append(f"{route}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                    ops.append(unsupported_op(str(exc)) or "")
            else:
                op = next((o for o in ops if o), None)
                raise ExportRefused("OpenVINO conversion failed on every route"
                                    + (f" (operator {op})" if op else "") + " (" + "; ".join(failures) + ")",
                                    field="export.openvino", fmt="openvino", op=op)
        converted.inputs[0].get_tensor().set_names({input_name})
        converted.outputs[0].get_tensor().set_names({"output"})
        ir = folder / "ir"
        ir.mkdir(parents=True, exist_ok=True)
        ov.save_model(converted, str(ir / "model.xml"), compress_to_fp16=self.config.fp16)
        return ir, {"route": route, "routes_failed": failures, "weights": "fp16" if self.config.fp16 else "fp32"}
