"""ONNX Runtime: runs .onnx artifacts on its CPU provider."""

from __future__ import annotations

from runtimes.base import AgentRuntime


class OnnxRuntime(AgentRuntime):
    name = "onnxruntime"
    formats = ("onnx",)
    requires = ("onnxruntime",)
    install_hint = "pip install 'edge-compress[onnx]'"
