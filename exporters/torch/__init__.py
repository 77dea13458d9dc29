"""torch: the models the torch stages pass along are artifact folders (factory, structure as
JSON, safetensors weights) that the torch runtime loads; `export: [torch]` writes a torch.export
program (.pt2) that needs only torch to run. Loading a .pt2 runs code from the file, so
`compress bench` asks for --trust."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from compress.contracts import Exported, ExportRequest, QuantizeRequest, Readback
from compress.errors import StageError, refused


class TorchFormat:
    name = "torch"
    runtimes = ("torch",)
    suffixes = (".pt2",)
    loads_code = True
    requires = ("torch",)
    install_hint = "pip install torch"
    libraries = ("torch", "safetensors")
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

        dest = request.folder / "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=4096)
        try:
            program = torch.export.export(request.model, tuple(request.example),
                                          dynamic_shapes=tuple({0: batch} for _ in request.example))
            torch.export.save(program, str(dest))
        except Exception as exc:
            raise refused("torch", exc, "torch.export") from None
        feeds = {n: t.numpy() for n, t in zip(request.input_names, request.example, strict=True)}
        got = request.run("torch", dest, feeds)[0]
        with torch.no_grad():
            want = request.model(*request.example)
        want = (want if isinstance(want, torch.Tensor) else want[0]).numpy()
        return Exported(path=dest, info={"program": "torch.export", "max_abs_error_vs_torch":
                                         float(np.abs(got - want).max())})

    def quantize(self, request: QuantizeRequest) -> Exported:
        raise StageError("the torch format has no quantizer", field="quantize")

    def inspect(self, path: Path) -> Readback:
        return Readback()

    def check_file(self, path: Path) -> None:
        """A .pt2 program runs code when loaded: `loads_code` makes bench ask for --trust first."""
