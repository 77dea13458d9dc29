"""OpenVINO: IR (.xml + .bin, or their folder) and .onnx files, on its CPU or GPU plugin."""

from __future__ import annotations

import os
from typing import Any


class OpenVinoBackend:
    name = "openvino"
    requires = ("openvino",)
    distributions = ("openvino",)
    install_hint = "pip install openvino"

    @classmethod
    def files(cls, model: str) -> list[tuple[str, str]]:
        """An IR is its .xml and the .bin beside it."""
        if model.lower().endswith(".xml"):
            weights = model[:-4] + ".bin"
            return [("model.xml", model)] + ([("model.bin", weights)] if os.path.isfile(weights) else [])
        return []

    def __init__(self, model: str, threads: int, device: Any) -> None:
        import openvino as ov

        path = os.path.join(model, "model.xml") if os.path.isdir(model) else model
        core = ov.Core()
        target = {"cpu": "CPU", "gpu": "GPU"}.get(device.kind)
        if target is None:
            raise ValueError("device %r is not one of cpu, gpu[:N]" % device.text)
        if device.explicit_index:
            target = "%s.%d" % (target, device.index)
        available = core.available_devices  # e.g. ['CPU', 'GPU.0', 'GPU.1'] or ['CPU', 'GPU']
        if not any(d == target or d.startswith(target + ".") or d + ".0" == target for d in available):
            raise RuntimeError("OpenVINO here has no device %s (it has %s)" % (target, ", ".join(available)))
        # An fp32 artifact is verified in fp32: the CPU plugin otherwise runs it in bf16 on CPUs
        # that have it (outputs off by ~0.1). Quantized layers still run in int8.
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if target == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(path), target, config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.version = ov.get_version()

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import numpy

        # share_inputs: the request reads the caller's arrays in place (no per-call copy; the call is
        # synchronous, so they outlive it). The request reuses its output buffers: copy those.
        result = self.request.infer(dict(enumerate(numpy.ascontiguousarray(v) for v in feeds.values())),
                                    share_inputs=True)
        return [result[output].copy() for output in self.compiled.outputs]

    def timed_call(self, feeds: dict[str, Any]) -> Any:
        import numpy
        import openvino as ov

        for index, value in enumerate(feeds.values()):  # set once, as benchmark_app does
            self.request.set_input_tensor(index, ov.Tensor(numpy.ascontiguousarray(value), shared_memory=True))
        return self.request.infer

    def input_specs(self) -> list[tuple[str, list[int | None], str]]:
        specs = []
        for port in self.compiled.inputs:
            shape = [None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
            specs.append((port.get_any_name(), shape, port.get_element_type().to_dtype().name))
        return specs
