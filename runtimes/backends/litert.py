"""LiteRT: .tflite files on the CPU (XNNPACK), through ai-edge-litert, or tflite_runtime / TensorFlow
Lite on devices without it. Quantized inputs and outputs are (de)quantized here: callers pass and
receive floats."""

from __future__ import annotations

from typing import Any


def _interpreter_class() -> tuple[Any, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert " + installed("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime " + installed("tflite-runtime")
    except ImportError:
        pass
    import tensorflow as tf

    return tf.lite.Interpreter, "tensorflow " + tf.__version__


class LiteRtBackend:
    name = "litert"
    requires_any = ("ai_edge_litert", "tflite_runtime", "tensorflow")
    distributions = ("ai-edge-litert", "tflite-runtime", "tensorflow")
    install_hint = "pip install ai-edge-litert (on a device: pip install tflite-runtime)"

    def __init__(self, model: str, threads: int, device: Any) -> None:
        if device.kind != "cpu":
            raise ValueError("the LiteRT agent runs on the CPU (XNNPACK); device %r is not supported" % device.text)
        interpreter_class, self.version = _interpreter_class()
        self.interpreter = interpreter_class(model_path=model, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_names = None  # fed by position

    @staticmethod
    def _to_tensor(array: Any, detail: dict[str, Any]) -> Any:
        import numpy

        scale, zero_point = detail["quantization"]
        if scale and numpy.issubdtype(detail["dtype"], numpy.integer) and array.dtype.kind == "f":
            info = numpy.iinfo(detail["dtype"])
            return numpy.clip(numpy.round(array / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
        return array.astype(detail["dtype"], copy=False)

    @staticmethod
    def _from_tensor(array: Any, detail: dict[str, Any]) -> Any:
        import numpy

        scale, zero_point = detail["quantization"]
        if scale and numpy.issubdtype(array.dtype, numpy.integer):
            return (array.astype(numpy.float32) - zero_point) * scale
        return array.copy()

    def _invoke(self, arrays: list[Any]) -> list[Any]:
        for array, detail in zip(arrays, self.inputs):
            self.interpreter.set_tensor(detail["index"], self._to_tensor(array, detail))
        self.interpreter.invoke()
        return [self._from_tensor(self.interpreter.get_tensor(d["index"]), d) for d in self.outputs]

    def input_specs(self) -> list[tuple[str, list[int | None], str]]:
        specs = []
        for detail in self.inputs:
            shape = [None if d < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
            quantized = detail["quantization"][0] and detail["dtype"].__name__ in ("int8", "uint8")
            specs.append((detail["name"], shape, "float32" if quantized else detail["dtype"].__name__))
        return specs

    def timed_call(self, feeds: dict[str, Any]) -> Any:
        arrays = list(feeds.values())
        if arrays[0].shape[0] != int(self.inputs[0]["shape"][0]):
            return lambda: self.run(feeds)
        for array, detail in zip(arrays, self.inputs):  # quantized and set once, as litert-benchmark does
            self.interpreter.set_tensor(detail["index"], self._to_tensor(array, detail))
        return self.interpreter.invoke

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import numpy

        arrays = list(feeds.values())
        fixed = int(self.inputs[0]["shape"][0])
        count = arrays[0].shape[0]
        if count == fixed:
            return self._invoke(arrays)
        if count % fixed:
            raise ValueError("this .tflite takes batches of %d; %d samples given" % (fixed, count))
        # a fixed-batch model: run it chunk by chunk
        chunks = [self._invoke([a[i:i + fixed] for a in arrays]) for i in range(0, count, fixed)]
        return [numpy.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
