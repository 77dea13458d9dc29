"""ONNX Runtime: .onnx files on the CPU, CUDA or TensorRT execution provider (never a silent fall back)."""

from __future__ import annotations

from typing import Any

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
           "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(bool)": "bool"}


class OnnxRuntimeBackend:
    name = "onnxruntime"
    requires = ("onnxruntime",)
    distributions = ("onnxruntime", "onnxruntime-gpu")
    install_hint = "pip install onnxruntime"

    def __init__(self, model: str, threads: int, device: Any) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if device.kind not in _PROVIDERS:
            raise ValueError("device %r is not one of cpu, cuda[:N], tensorrt[:N]" % device.text)
        # No silent fall back to the CPU: a GPU latency that is really a CPU one would be a lie.
        provider = _PROVIDERS[device.kind]
        if provider not in ort.get_available_providers():
            hint = "; install onnxruntime-gpu (and only it) for CUDA and TensorRT" if device.kind != "cpu" else ""
            raise RuntimeError("ONNX Runtime here has no %s (installed: %s)%s"
                               % (provider, ", ".join(ort.get_available_providers()), hint))
        providers = [provider] if device.kind == "cpu" else [(provider, {"device_id": device.index})]
        self.session = ort.InferenceSession(model, options, providers=providers)
        if self.session.get_providers()[0] != provider:
            raise RuntimeError("ONNX Runtime did not use %s" % provider)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.version = ort.__version__

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return self.session.run(None, feeds)

    def timed_call(self, feeds: dict[str, Any]) -> Any:
        return lambda: self.session.run(None, feeds)

    def input_specs(self) -> list[tuple[str, list[int | None], str]]:
        return [(i.name, [d if isinstance(d, int) else None for d in i.shape], _DTYPES.get(i.type, "float32"))
                for i in self.session.get_inputs()]
