"""torch -> ONNX with the dynamo exporter, checked with onnx.checker and against torch outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError, StageError
from exporters import refused

if TYPE_CHECKING:
    import numpy as np
    import torch

# protobuf caps a single file at 2 GiB; leave headroom for the graph itself.
_SINGLE_FILE_LIMIT = 1_800_000_000


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose external tensors point outside its own folder."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    root = path.resolve().parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise InputError(f"tensor {tensor.name!r} points at external data outside the model's folder "
                             f"({location!r}); refused", file=str(path), field="external_data")


def _strip_debug_info(model: Any) -> None:
    """Drop per-node stack traces and source paths: kilobytes a device never needs."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


class OnnxExporter:
    name = "onnx"
    format = "onnx"
    suffix = ".onnx"
    requires = ("onnx", "onnxscript", "onnxruntime")
    install_hint = "pip install 'edge-compress[onnx]'"

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def export(self, model: torch.nn.Module, example: torch.Tensor, folder: Path,
               input_name: str) -> tuple[Path, dict[str, Any]]:
        """Write `folder/model.onnx`; returns its path and what the export measured."""
        dest = folder / "model.onnx"
        return dest, self.export_file(model, example, dest, input_name)

    def export_file(self, model: torch.nn.Module, example: torch.Tensor, dest: Path,
                    input_name: str) -> dict[str, Any]:
        import onnx
        import torch

        model = model.eval()
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        external = param_bytes > _SINGLE_FILE_LIMIT
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[input_name], output_names=["output"],
                dynamic_shapes=({0: batch},), optimize=True, verbose=False)
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
            expected = model(example).numpy()
        error = self._max_error(dest, {input_name: example.numpy()}, expected)
        scale = max(1.0, float(abs(expected).max()))
        if error > 1e-4 * scale:
            raise StageError(f"ONNX output differs from torch by {error:.3g} (max abs)", field="export.onnx")
        return {"opset": max(o.version for o in onnx.load(str(dest), load_external_data=False).opset_import
                             if o.domain in ("", "ai.onnx")),
                "external_data": external, "max_abs_error_vs_torch": error}

    @staticmethod
    def _max_error(path: Path, feeds: dict[str, np.ndarray], expected: np.ndarray) -> float:
        from runtimes.agent import load_backend

        got = load_backend("onnxruntime", str(path)).run(feeds)[0]
        return float(abs(got - expected).max())
