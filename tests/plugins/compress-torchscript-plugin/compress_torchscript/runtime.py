"""The torchscript runtime backend, for the device agent: torch.jit.load, on the CPU.

Self-contained (torch and numpy), so a target can copy this file beside the agent on a device.
"""

from __future__ import annotations

import json
from typing import Any

SPECS = "compress_inputs.json"


class TorchScriptBackend:
    name = "torchscript"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install torch"

    def __init__(self, model: str, threads: int, device: Any) -> None:
        import torch

        if device.kind != "cpu":
            raise ValueError(f"the torchscript backend runs on the CPU; device {device.text!r} is not supported")
        torch.set_num_threads(threads)
        extra = {SPECS: ""}
        self.module = torch.jit.load(model, map_location="cpu", _extra_files=extra)
        self.specs = json.loads(extra[SPECS]) if extra[SPECS] else []
        self.input_names = [spec["name"] for spec in self.specs] or None
        self.torch = torch
        self.version = torch.__version__

    def input_specs(self) -> list[tuple[str, list[int | None], str]]:
        return [(s["name"], s["shape"], s["dtype"]) for s in self.specs]

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        with self.torch.inference_mode():
            out = self.module(*[self.torch.from_numpy(v) for v in feeds.values()])
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]

    def timed_call(self, feeds: dict[str, Any]) -> Any:
        tensors = [self.torch.from_numpy(v) for v in feeds.values()]

        def call() -> None:
            with self.torch.inference_mode():
                self.module(*tensors)

        return call
