"""torch eager: the reference runtime for torch artifacts."""

from __future__ import annotations

from runtimes.base import AgentRuntime


class TorchRuntime(AgentRuntime):
    name = "torch"
    formats = ("torch",)
    requires = ("torch",)
    install_hint = "pip install torch"
