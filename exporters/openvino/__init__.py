"""OpenVINO IR (.xml + .bin in a folder): openvino.convert_model; int8 with NNCF."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from compress.contracts import FormatFolder
from compress.errors import InputError


class OpenVinoExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fp16: bool = False  # store weights as fp16 (half the size; computed in fp32 unless the device prefers)


class OpenVinoFormat(FormatFolder):
    name = "openvino"
    runtimes = ("openvino",)
    suffixes = (".xml",)
    loads_code = False
    requires = ("openvino",)
    install_hint = "pip install 'edge-compress[openvino]'"
    libraries = ("torch", "openvino", "onnx", "onnxscript")
    quantize_libraries = ("openvino", "nncf")
    Config = OpenVinoExportConfig
    quantizer = "nncf"
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic")}

    def check_file(self, path: Path) -> None:
        xml = path / "model.xml" if path.is_dir() else path
        if not xml.with_suffix(".bin").is_file():
            raise InputError(f"{xml.with_suffix('.bin').name} (the weights of this IR) is missing", file=str(xml))
