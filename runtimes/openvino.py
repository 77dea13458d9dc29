"""OpenVINO: runs IR (.xml + .bin) and .onnx artifacts, in fp32 unless the artifact is quantized."""

from __future__ import annotations

from runtimes.base import AgentRuntime


class OpenVinoRuntime(AgentRuntime):
    name = "openvino"
    formats = ("openvino", "onnx")
    requires = ("openvino",)
    install_hint = "pip install 'edge-compress[openvino]'"
