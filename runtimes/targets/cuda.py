"""`cuda`, `cuda:N` (and `cuda:N?provider=tensorrt`): the device agent on this machine's NVIDIA GPU.

Each runtime is asked for the GPU by name, never with a CPU fall back: ONNX Runtime's
CUDAExecutionProvider (or TensorrtExecutionProvider) as the only provider, torch on `cuda:N`.
OpenVINO (its GPU plugin is for Intel GPUs) and LiteRT (no CUDA delegate in its Python runtime) are
refused with a reason. The response's device records the GPU's name, driver and memory.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from ..protocol import Request, Response
from . import TargetError, remote
from .local import run_agent

_SPEC = re.compile(r"cuda(?::(\d{1,2}))?(?:\?(.*))?")
_REFUSED = {
    "openvino": "openvino has no CUDA backend (its GPU plugin is for Intel GPUs); verify OpenVINO on a cpu target",
    "litert": "litert has no CUDA backend in the agent (the LiteRT GPU delegate is for phones); "
              "verify .tflite on a cpu or adb target",
}


class CudaTarget:
    def __init__(self, index: int = 0, provider: str = "cuda") -> None:
        self.index, self.provider = index, provider
        self.name = f"cuda:{index}" + ("/tensorrt" if provider == "tensorrt" else "")
        self.host = "localhost"  # the same machine as `local`: measured one after the other

    @classmethod
    def from_spec(cls, spec: str) -> CudaTarget:
        match = _SPEC.fullmatch(spec)
        if not match:
            raise ValueError("expected cuda or cuda:N (N the GPU's index), e.g. cuda:0")
        options = remote.parse_options(match.group(2) or "", {"provider": "cuda or tensorrt"})
        provider = options.get("provider", "cuda")
        if provider not in ("cuda", "tensorrt"):
            raise ValueError(f"option provider={provider!r} is not cuda or tensorrt")
        return cls(int(match.group(1) or 0), provider)

    def gpus(self) -> list[str]:
        """The GPUs nvidia-smi lists ('GPU 0: NVIDIA H100 ... (UUID: ...)')."""
        if shutil.which("nvidia-smi") is None:
            return []
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [line for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else []

    def prepare(self) -> None:
        gpus = self.gpus()
        if not gpus:
            reason = ("nvidia-smi is not installed" if shutil.which("nvidia-smi") is None
                      else "nvidia-smi lists no GPU")
            raise TargetError(f"target {self.name}: no CUDA GPU here ({reason}); measure on a machine with an "
                             "NVIDIA GPU and its driver, or use target local")
        if self.index >= len(gpus):
            raise TargetError(f"target {self.name}: this machine has {len(gpus)} CUDA GPU(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(len(gpus)))}")

    def device_for(self, runtime: str) -> str:
        """The agent's device string for a runtime on this GPU; ValueError when it has none."""
        if runtime in _REFUSED:
            raise ValueError(_REFUSED[runtime])
        if runtime == "onnxruntime":
            return f"{self.provider}:{self.index}"
        if self.provider == "tensorrt":
            raise ValueError(f"{runtime} has no TensorRT provider; use target cuda:{self.index}")
        return f"cuda:{self.index}"

    def measure(self, request: Request, timeout_s: float) -> Response:
        try:
            device = self.device_for(request.runtime)
        except ValueError as exc:
            return Response.failure("failed", str(exc))
        return run_agent(request.replace(device=device), timeout_s)
