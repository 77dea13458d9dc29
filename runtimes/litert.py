"""LiteRT (ai-edge-litert; tflite_runtime or TensorFlow Lite on devices without it) for .tflite."""

from __future__ import annotations

import importlib.util

from runtimes.base import AgentRuntime


class LiteRtRuntime(AgentRuntime):
    name = "litert"
    formats = ("tflite",)
    requires = ("ai_edge_litert",)
    install_hint = "pip install 'edge-compress[tflite]' (on a device: pip install tflite-runtime)"

    @classmethod
    def missing(cls) -> list[str]:
        found = any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow"))
        return [] if found else ["ai_edge_litert"]
