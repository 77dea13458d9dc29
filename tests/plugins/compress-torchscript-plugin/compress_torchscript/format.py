"""The torchscript format: torch.jit.trace, one `model.pt` with its input specs inside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from compress.contracts import Exported, ExportRequest, QuantizeRequest, Readback
from compress.errors import StageError, refused

SPECS = "compress_inputs.json"  # the extra file inside model.pt that names the inputs and their shapes


class TorchScriptFormat:
    name = "torchscript"
    runtimes = ("torchscript",)
    suffixes = (".pt",)
    loads_code = True  # TorchScript runs the code stored in the file
    requires = ("torch",)
    install_hint = "pip install torch"
    libraries = ("torch", "compress-torchscript-plugin")
    quantize_libraries = ()
    Config = None
    quantizer = ""
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {}  # no quantizer: validate refuses int8 for it
    QuantizeOptions = None
    layer_int8: ClassVar[dict[str, dict[str, str]]] = {}

    def check_quantize(self, config: Any) -> list[tuple[str, str]]:
        return []

    def export(self, request: ExportRequest) -> Exported:
        import numpy as np
        import torch

        dest = request.folder / "model.pt"
        specs = [{"name": name, "shape": [None, *t.shape[1:]], "dtype": str(t.dtype).replace("torch.", "")}
                 for name, t in zip(request.input_names, request.example, strict=True)]
        try:
            with torch.no_grad():
                traced = torch.jit.trace(request.model, tuple(request.example))
            torch.jit.save(traced, str(dest), _extra_files={SPECS: json.dumps(specs)})
        except Exception as exc:
            raise refused(self.name, exc, "TorchScript tracing") from None
        feeds = {name: t.numpy() for name, t in zip(request.input_names, request.example, strict=True)}
        got = request.run(self.name, dest, feeds)[0]
        with torch.no_grad():
            want = request.model(*request.example).numpy()
        error = float(np.abs(got - want).max())
        if not error <= 1e-4 * max(1.0, float(np.abs(want).max())):
            raise StageError(f"TorchScript output differs from torch by {error:.3g}", field="export.torchscript")
        return Exported(path=dest, info={"traced": True, "max_abs_error_vs_torch": error})

    def quantize(self, request: QuantizeRequest) -> Exported:
        raise StageError("the torchscript format has no quantizer", field="quantize")

    def inspect(self, path: Path) -> Readback:
        return Readback()

    def check_file(self, path: Path) -> None:
        """One file; `loads_code` makes `compress bench` ask for --trust before loading it."""
