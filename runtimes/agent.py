#!/usr/bin/env python3
"""The device agent: runs one model on one runtime, keeps its outputs and times it.

One small file with no dependency but numpy and the runtime it is asked for (Python 3.8+), so it
can be copied to a board and run there. Protocol (version 1), a JSON request file in, a JSON
response out (written to `response` when given, and printed as the last line of stdout):

request:
  protocol     1
  model        path of the model file (a folder for torch artifacts)
  runtime      "onnxruntime" | "openvino" | "litert" | "torch"
  device       "cpu" (default), "cuda[:N]" / "tensorrt[:N]" (onnxruntime), "gpu[:N]" (openvino)
  threads      intra-op threads, set before the runtime is imported
  inputs       .npz of named arrays, samples on the first axis (the same for every artifact); or
  random_inputs  {shapes: {name: [dims]}, batch, seed}: random inputs from the model's own specs
  batch_size   batch for collecting outputs (default 64)
  outputs      where to write the outputs (.npz, one array per model output), or null to skip
  latency      null, or {warmup, min_runs, min_seconds, max_seconds, batch_size, trials}
  python_path  folders to import from (torch artifacts rebuild their model from its factory)
  input_transpose  axes to transpose every input by first (NCHW data for a channels-last model)
  response     where to write the response JSON (optional)

response:
  protocol, ok, status, error (one line when not ok), runtime {name, version, device}, device
  {machine, system, release, cpu, python, python_executable, numpy, int8_dot_product, runtimes
  (the runtime libraries installed, with versions), gpu (name, driver, memory_mb: CUDA devices
  only)}, outputs (path) and latency {p50_ms, p90_ms, p99_ms,
  mean_ms, min_ms, max_ms, runs, seconds, throughput_per_s, batch_size, threads, warmup,
  trial_p50_ms (the p50 of each round of runs)}. Latency is the runtime's inference call on
  inputs already converted to the model's input format (set once, as benchmark_app and
  litert-benchmark do); outputs are collected from separate, untimed calls.

Exit code 0 when ok, 1 when the measurement failed, 2 for a bad request (status "bad_input").
docs/targets.md describes how targets copy this file to a device and run it.
"""

import json
import os
import platform
import sys
import time

PROTOCOL = 1
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _set_threads(threads):
    # Must happen before the runtime (and its OpenMP pool) is imported.
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)


# The libraries each runtime can use, in the order tried (import names, distribution names).
RUNTIME_MODULES = {
    "onnxruntime": (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),),
    "openvino": (("openvino", ("openvino",)),),
    "litert": (("ai_edge_litert", ("ai-edge-litert",)), ("tflite_runtime", ("tflite-runtime", "tflite_runtime")),
               ("tensorflow", ("tensorflow",))),
    "torch": (("torch", ("torch",)),),
}
INSTALL_HINTS = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install openvino",
                 "litert": "pip install ai-edge-litert (or tflite-runtime)", "torch": "pip install torch"}


def _installed(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_runtimes():
    """{runtime: "library version"} for the runtimes this Python can load (found without importing)."""
    found = {}
    for runtime, choices in RUNTIME_MODULES.items():
        for module, distributions in choices:
            if _installed(module):
                found[runtime] = "%s %s" % (distributions[0], _package_version(*distributions))
                break
    return found


def check_runtime(runtime):
    """A clear error, naming the runtime and this Python, when its library is not installed here."""
    if runtime in RUNTIME_MODULES and not any(_installed(m) for m, _ in RUNTIME_MODULES[runtime]):
        raise MissingRuntime("%s is not installed on this device (python %s at %s): %s"
                             % (runtime, platform.python_version(), sys.executable, INSTALL_HINTS[runtime]))


def describe_gpu(device):
    """Name, driver and memory of the CUDA GPU a cuda[:N] / tensorrt[:N] device runs on."""
    import subprocess

    index = _device_index(device)
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader,nounits", "-i", str(index)],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        name, driver, memory = [part.strip() for part in line[0].split(",")]
        return {"index": index, "name": name, "driver": driver, "memory_mb": int(float(memory))}
    except Exception:
        pass
    try:
        import torch

        return {"index": index, "name": torch.cuda.get_device_name(index), "driver": None,
                "cuda": torch.version.cuda}
    except Exception as exc:
        return {"index": index, "error": "%s: %s" % (type(exc).__name__, exc)}


def describe_device(device="cpu"):
    info = {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "python_executable": sys.executable,
            "cpu": platform.processor() or platform.machine()}
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and info["cpu"] in ("", platform.machine()):
                    info["cpu"] = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1]
                    break
    except OSError:
        pass
    words = set(flags.split())
    # int8 is only fast with dot-product instructions: VNNI on x86, asimddp on Arm.
    info["int8_dot_product"] = sorted(words & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    info["runtimes"] = installed_runtimes()
    if device.split(":", 1)[0] in ("cuda", "tensorrt"):
        info["gpu"] = describe_gpu(device)
    return info


def _package_version(*names):
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python 3.7 boards
        return "unknown"
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def _device_index(device):
    return int(device.split(":", 1)[1]) if ":" in device else 0


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model, threads, device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # No silent fall back to the CPU: a GPU latency that is really a CPU one would be a lie.
        kinds = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
        kind = device.split(":", 1)[0]
        if kind not in kinds:
            raise ValueError("device %r is not one of cpu, cuda[:N], tensorrt[:N]" % device)
        provider = kinds[kind]
        if provider not in ort.get_available_providers():
            hint = "; install onnxruntime-gpu (and only it) for CUDA and TensorRT" if kind != "cpu" else ""
            raise RuntimeError("ONNX Runtime here has no %s (installed: %s)%s"
                               % (provider, ", ".join(ort.get_available_providers()), hint))
        providers = [provider] if kind == "cpu" else [(provider, {"device_id": _device_index(device)})]
        self.session = ort.InferenceSession(model, options, providers=providers)
        if self.session.get_providers()[0] != provider:
            raise RuntimeError("ONNX Runtime did not use %s" % provider)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.version = ort.__version__

    def run(self, feeds):
        return self.session.run(None, feeds)

    def timed_call(self, feeds):
        return lambda: self.session.run(None, feeds)

    def input_specs(self):
        dtypes = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
                  "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(bool)": "bool"}
        return [(i.name, [d if isinstance(d, int) else None for d in i.shape], dtypes.get(i.type, "float32"))
                for i in self.session.get_inputs()]


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, model, threads, device):
        import openvino as ov

        path = os.path.join(model, "model.xml") if os.path.isdir(model) else model
        core = ov.Core()
        target = {"cpu": "CPU", "gpu": "GPU"}.get(device.split(":", 1)[0])
        if target is None:
            raise ValueError("device %r is not one of cpu, gpu[:N]" % device)
        if ":" in device:
            target = "%s.%d" % (target, _device_index(device))
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

    def run(self, feeds):
        import numpy

        # share_inputs: the request reads the caller's arrays in place (no per-call copy; the call is
        # synchronous, so they outlive it). The request reuses its output buffers: copy those.
        result = self.request.infer(dict(enumerate(numpy.ascontiguousarray(v) for v in feeds.values())),
                                    share_inputs=True)
        return [result[output].copy() for output in self.compiled.outputs]

    def timed_call(self, feeds):
        import numpy
        import openvino as ov

        for index, value in enumerate(feeds.values()):  # set once, as benchmark_app does
            self.request.set_input_tensor(index, ov.Tensor(numpy.ascontiguousarray(value), shared_memory=True))
        return self.request.infer

    def input_specs(self):
        specs = []
        for port in self.compiled.inputs:
            shape = [None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
            specs.append((port.get_any_name(), shape, port.get_element_type().to_dtype().name))
        return specs


def _load_tflite_interpreter():
    """ai-edge-litert here; tflite_runtime or TensorFlow Lite on devices without it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert " + _package_version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime " + _package_version("tflite-runtime", "tflite_runtime")
    except ImportError:
        pass
    import tensorflow as tf

    return tf.lite.Interpreter, "tensorflow " + tf.__version__


class LiteRtBackend:
    """Quantized inputs and outputs are (de)quantized here: callers pass and get floats."""

    name = "litert"

    def __init__(self, model, threads, device):
        if device != "cpu":
            raise ValueError("the LiteRT agent runs on the CPU (XNNPACK); device %r is not supported" % device)
        interpreter_class, self.version = _load_tflite_interpreter()
        self.interpreter = interpreter_class(model_path=model, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_names = None  # fed by position

    @staticmethod
    def _to_tensor(array, detail):
        import numpy

        scale, zero_point = detail["quantization"]
        if scale and numpy.issubdtype(detail["dtype"], numpy.integer) and array.dtype.kind == "f":
            info = numpy.iinfo(detail["dtype"])
            return numpy.clip(numpy.round(array / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
        return array.astype(detail["dtype"], copy=False)

    @staticmethod
    def _from_tensor(array, detail):
        import numpy

        scale, zero_point = detail["quantization"]
        if scale and numpy.issubdtype(array.dtype, numpy.integer):
            return (array.astype(numpy.float32) - zero_point) * scale
        return array.copy()

    def _invoke(self, arrays):
        for array, detail in zip(arrays, self.inputs):
            self.interpreter.set_tensor(detail["index"], self._to_tensor(array, detail))
        self.interpreter.invoke()
        return [self._from_tensor(self.interpreter.get_tensor(d["index"]), d) for d in self.outputs]

    def input_specs(self):
        specs = []
        for detail in self.inputs:
            shape = [None if d < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
            quantized = detail["quantization"][0] and detail["dtype"].__name__ in ("int8", "uint8")
            specs.append((detail["name"], shape, "float32" if quantized else detail["dtype"].__name__))
        return specs

    def timed_call(self, feeds):
        arrays = list(feeds.values())
        if arrays[0].shape[0] != int(self.inputs[0]["shape"][0]):
            return lambda: self.run(feeds)
        for array, detail in zip(arrays, self.inputs):  # quantized and set once, as litert-benchmark does
            self.interpreter.set_tensor(detail["index"], self._to_tensor(array, detail))
        return self.interpreter.invoke

    def run(self, feeds):
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


class TorchBackend:
    """A torch artifact folder of compress, or a .pt2 program (which the caller chose to trust)."""

    name = "torch"

    def __init__(self, model, threads, device):
        import torch

        torch.set_num_threads(threads)
        kind = device.split(":", 1)[0]
        if kind not in ("cpu", "cuda"):
            raise ValueError("device %r is not one of cpu, cuda[:N]" % device)
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("torch %s here has no CUDA device (torch.cuda.is_available() is False)"
                                   % torch.__version__)
            if _device_index(device) >= torch.cuda.device_count():
                raise RuntimeError("torch sees %d CUDA device(s); %s does not exist"
                                   % (torch.cuda.device_count(), device))
        self.device = torch.device("cuda:%d" % _device_index(device) if kind == "cuda" else "cpu")
        self.torch = torch
        self.specs = []
        if model.endswith(".pt2"):
            program = torch.export.load(model)
            self.model = program.module()
            for index, value in enumerate(program.example_inputs[0] if program.example_inputs else ()):
                self.specs.append(("input_%d" % index, list(value.shape), str(value.dtype).replace("torch.", "")))
        else:
            from pathlib import Path

            try:
                from compress.modelio import load_torch_artifact
            except ImportError:
                raise MissingRuntime("a torch artifact folder needs the compress package where the agent runs "
                                     "(python %s at %s): pip install edge-compress; a .pt2 program needs only torch"
                                     % (platform.python_version(), sys.executable)) from None

            self.model = load_torch_artifact(Path(model)).eval()
        self.model = self.model.to(self.device)
        self.input_names = None
        self.version = torch.__version__

    def input_specs(self):
        return self.specs

    def run(self, feeds):
        with self.torch.inference_mode():
            out = self.model(*[self.torch.from_numpy(v).to(self.device) for v in feeds.values()])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.cpu().numpy() for o in outs]

    def timed_call(self, feeds):
        tensors = [self.torch.from_numpy(v).to(self.device) for v in feeds.values()]
        synchronize = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def call():  # on a GPU, until the results are there (kernels run asynchronously)
            with self.torch.inference_mode():
                self.model(*tensors)
            synchronize()

        return call


BACKENDS = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend, "litert": LiteRtBackend,
            "torch": TorchBackend}


def load_backend(runtime, model, threads=1, device="cpu"):
    if runtime not in BACKENDS:
        raise ValueError("runtime %r is not known to this agent (known: %s)" % (runtime, ", ".join(BACKENDS)))
    check_runtime(runtime)
    return BACKENDS[runtime](model, threads, device)


def _feeds(arrays, names, start, stop):
    keys = list(arrays)
    if names is None:
        names = keys
    if len(names) != len(keys):
        raise ValueError("the model has %d inputs but %d arrays were given" % (len(names), len(keys)))
    return {name: arrays[key][start:stop] for name, key in zip(names, keys)}


def collect_outputs(backend, arrays, batch_size):
    import numpy

    count = len(next(iter(arrays.values())))
    chunks = []
    for start in range(0, count, batch_size):
        chunks.append(backend.run(_feeds(arrays, backend.input_names, start, start + batch_size)))
    return [numpy.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def time_runs(run, warmup, min_runs, min_seconds, max_seconds):
    """Warm up, then run until both min_runs and min_seconds are reached (or max_seconds)."""
    for _ in range(warmup):
        run()
    times = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - started
        if (len(times) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return times, elapsed


def measure_latency(backend, arrays, latency, threads):
    """Timed runs in `trials` rounds (default 1); statistics over all runs, plus each round's p50
    so a gate can compare medians of trials on a noisy machine."""
    batch = int(latency.get("batch_size", 1))
    feeds = _feeds(arrays, backend.input_names, 0, batch)
    # The runtime's call on inputs already in its own format, as benchmark_app and litert-benchmark
    # time it: converting inputs (e.g. quantizing them for an int8 .tflite) happens once, before.
    call = backend.timed_call(feeds) if hasattr(backend, "timed_call") else (lambda: backend.run(feeds))
    warmup = int(latency.get("warmup", 10))
    times, elapsed, trial_p50 = [], 0.0, []
    for trial in range(max(1, int(latency.get("trials", 1)))):
        round_times, round_elapsed = time_runs(
            call, warmup if trial == 0 else 0, int(latency.get("min_runs", 50)),
            float(latency.get("min_seconds", 1.0)), float(latency.get("max_seconds", 120.0)))
        times.extend(round_times)
        elapsed += round_elapsed
        trial_p50.append(percentile(sorted(round_times), 50))
    ordered = sorted(times)
    mean = sum(times) / len(times)
    return {"p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90),
            "p99_ms": percentile(ordered, 99), "mean_ms": mean, "min_ms": ordered[0], "max_ms": ordered[-1],
            "runs": len(times), "seconds": elapsed, "throughput_per_s": 1000.0 * batch / mean,
            "batch_size": batch, "threads": threads, "warmup": warmup, "trial_p50_ms": trial_p50}


class BadInput(ValueError):
    """The request cannot be served as asked (not a failure of the runtime)."""


class MissingRuntime(RuntimeError):
    """The runtime asked for is not installed where the agent runs."""


def random_inputs(specs, shapes, batch, seed):
    """Inputs for a benchmark: the model's own input specs, dynamic dimensions from `shapes`."""
    import numpy

    rng = numpy.random.default_rng(seed)
    arrays = {}
    for name, shape, dtype in specs:
        given = shapes.get(name) or (shapes.get("*") if len(specs) == 1 else None)
        if given is not None:
            if len(given) != len(shape):
                raise BadInput("input %r has %d dimensions; --input-shape gave %d" % (name, len(shape), len(given)))
            shape = list(given)
        elif shape and shape[0] is None:
            shape = [batch, *shape[1:]]
        if any(d is None for d in shape):
            raise BadInput("input %r has dynamic dimensions %s: give them with --input-shape %s=..."
                           % (name, ["?" if d is None else d for d in shape], name))
        if dtype.startswith("float"):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            arrays[name] = numpy.ones(shape, dtype=bool)
        else:
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
    if not arrays:
        raise BadInput("the model does not describe its inputs: give them with --input-shape")
    return arrays


def serve(request):
    if request.get("protocol") != PROTOCOL:
        raise ValueError("protocol %r is not %d" % (request.get("protocol"), PROTOCOL))
    threads = int(request.get("threads", 1))
    _set_threads(threads)
    for folder in request.get("python_path") or []:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    import numpy

    backend = load_backend(request["runtime"], request["model"], threads, request.get("device", "cpu"))
    if request.get("inputs"):
        with numpy.load(request["inputs"], allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    else:
        generate = request.get("random_inputs") or {}
        arrays = random_inputs(backend.input_specs(), generate.get("shapes") or {},
                               int(generate.get("batch", 1)), int(generate.get("seed", 0)))
    if request.get("input_transpose"):  # e.g. NCHW data for a channels-last artifact
        axes = request["input_transpose"]
        arrays = {key: numpy.ascontiguousarray(value.transpose(axes)) for key, value in arrays.items()}
    response = {"protocol": PROTOCOL, "ok": True, "status": "ok", "error": None,
                "device": describe_device(request.get("device", "cpu")),
                "inputs": {key: list(value.shape) for key, value in arrays.items()},
                "runtime": {"name": backend.name, "version": backend.version,
                            "device": request.get("device", "cpu")}}
    if request.get("outputs"):
        outputs = collect_outputs(backend, arrays, int(request.get("batch_size", 64)))
        numpy.savez(request["outputs"], **{"output_%d" % i: o for i, o in enumerate(outputs)})
        response["outputs"] = request["outputs"]
    if request.get("latency"):
        response["latency"] = measure_latency(backend, arrays, request["latency"], threads)
    return response


def main(argv):
    # Run as a script, this file's folder comes first on sys.path, where runtimes/torch.py and
    # runtimes/onnxruntime.py would shadow the real libraries.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if len(argv) != 2:
        print("usage: agent.py REQUEST.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as handle:
            request = json.load(handle)
    except (OSError, ValueError) as exc:
        print(json.dumps({"protocol": PROTOCOL, "ok": False, "error": "bad request: %s" % exc}))
        return 2
    try:
        response = serve(request)
        code = 0
    except BadInput as exc:
        response = {"protocol": PROTOCOL, "ok": False, "status": "bad_input", "error": str(exc)}
        code = 2
    except MissingRuntime as exc:
        response = {"protocol": PROTOCOL, "ok": False, "status": "failed", "error": str(exc),
                    "device": describe_device()}
        code = 1
    except Exception as exc:  # any runtime failure becomes a one-line error in the response
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        response = {"protocol": PROTOCOL, "ok": False, "status": "failed",
                    "error": "%s: %s" % (type(exc).__name__, message)}
        code = 1
    text = json.dumps(response)
    if request.get("response"):
        with open(request["response"] + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(request["response"] + ".tmp", request["response"])
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
