"""ONNX fp32 -> int8 with ONNX Runtime's quantizers: static (QDQ format, per-channel weights,
calibration on samples from the calibration split) or dynamic (int8 weights, activations quantized
at run time). With an accuracy budget, the nodes most harmful to accuracy are left unquantized."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from compress.contracts import Exported, QuantizeRequest, first_layers, loses_a_multiplier, match_names
from compress.errors import tool_failure

# Ops that only move or reshape data: keeping them in float changes nothing on its own.
_LAYOUT_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice", "Split", "Pad", "Where",
               "TopK", "CumSum", "Resize", "GatherElements"}
# Activations the QDQ quantizer folds into the range of the pair after the node before them: there is
# no quantized Relu / Clip to keep in float (EfficientNet-Lite0's search kept 32 Clips in float for
# no change at all before these were left out).
_FOLDED_OPS = {"Relu", "Clip"}


def _candidates(nodes: list[Any], already_float: set[str]) -> list[str]:
    """Nodes the QDQ quantizer would quantize (its registries), minus pure data movement, folded
    activations and the nodes the recipe already keeps in float (ignored, the first layers)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    quantized = (set(QDQRegistry) | set(QLinearOpsRegistry)) - _LAYOUT_OPS - _FOLDED_OPS
    return [n.name for n in nodes if n.op_type in quantized and n.name not in already_float]


def _kept_in_float(prepared: Path, names: list[str], config: Any) -> tuple[list[str], list[str]]:
    """What the recipe keeps in float whatever the search does: the nodes `quantize.ignore` matches,
    and (static) the first layers of the first-layer policy not among them."""
    ignored = match_names(names, config.ignore)
    if config.mode == "dynamic":
        return ignored, []
    from compress.exporters.onnx.inspect import readback

    policy = config.first_layers
    first = first_layers(readback(prepared).ops, policy.in_float, policy.max_macs_share)
    return ignored, [n for n in first if n not in ignored]


def _pre_process(source: Path, dest: Path) -> None:
    """Shape inference and graph folding first, as ONNX Runtime's docs advise. Its symbolic shape
    inference fails on some graphs (MiniLM's attention here: "object of type 'NoneType' has no
    len()"); ONNX's own shape inference is enough for quantization then."""
    import contextlib

    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, dest = source.resolve(), dest.resolve()
    # An incomplete symbolic inference dumps sym_shape_infer_temp.onnx (+ external data) into the
    # working directory: run it where that dump is removed with the folder.
    with tempfile.TemporaryDirectory(prefix="compress-shapes-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(source), str(dest), skip_symbolic_shape=False)
        except Exception:
            quant_pre_process(str(source), str(dest), skip_symbolic_shape=True)


def quantize(request: QuantizeRequest) -> Exported:
    dest = request.folder / "model.onnx"
    source = request.source.path
    if request.validation is None:
        return Exported(path=dest, info=quantize_file(source, dest, request))
    # Accuracy-aware: nodes left unquantized, most harmful first, until within the budget.
    import onnx

    reference = request.validation.score(source)
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # node names as quantize_file will see them
        _pre_process(source, prepared)
        nodes = list(onnx.load(str(prepared), load_external_data=False).graph.node)
        ignored, first = _kept_in_float(prepared, [n.name for n in nodes], request.config)
        multipliers = [] if request.config.mode == "dynamic" else lossy_multipliers(prepared)
        candidates = _candidates(nodes, {*ignored, *first, *multipliers})

        def quantize_leaving(excluded: list[str], path: Path) -> None:
            info.update(quantize_file(source, path, request, extra_excluded=excluded))

        feeds = request.validation.feeds(32)

        def ranking(int8: Path) -> list[str]:
            return _rank_by_activation_error(prepared, int8, nodes, candidates, feeds, Path(scratch))

        # dynamic int8 has no QDQ pairs to compare activations at: one candidate at a time, then
        report = request.validation.search(quantize_leaving, candidates, reference, dest,
                                           ranking=None if request.config.mode == "dynamic" else ranking)
    info["nodes_excluded"] = sorted(set(info.get("nodes_excluded", [])) - set(candidates)) + report.kept_in_float
    return Exported(path=dest, info={**info, **report.as_info()})


def _rank_by_activation_error(prepared: Path, int8: Path, nodes: list[Any], candidates: list[str],
                              feeds: dict[str, Any], scratch: Path) -> list[str]:
    """Candidates ranked by the error each one adds (`_added_noise`), most first; those it could not
    measure last, in graph order."""
    added = _added_noise(prepared, int8, nodes, candidates, feeds, scratch)
    ranked = sorted(added, key=lambda name: added[name], reverse=True)
    return ranked + [c for c in candidates if c not in added]


def _added_noise(prepared: Path, int8: Path, nodes: list[Any], candidates: list[str], feeds: dict[str, Any],
                 scratch: Path) -> dict[str, float]:
    """The error each candidate adds, from one pass of the float model and one of the int8 model
    over a few validation samples (ONNX Runtime's qdq_loss_debug): the drop in signal to
    quantization noise ratio, in dB, from a node's input to its output."""
    import math

    import onnx
    from onnxruntime.quantization.calibrate import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            count = len(next(iter(feeds.values())))
            self._items = iter({name: values[i:i + 1] for name, values in feeds.items()} for i in range(count))

        def get_next(self) -> dict[str, Any] | None:
            return next(self._items, None)

    activations = {}
    for label, model in (("float", prepared), ("int8", int8)):
        augmented = scratch / f"ranking-{label}.onnx"
        modify_model_output_intermediate_tensors(str(model), str(augmented))
        activations[label] = collect_activations(str(augmented), Feeds())
    errors = compute_activation_error(create_activation_matching(activations["int8"], activations["float"]))

    graph_inputs = {i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input}
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)

    def sqnr(tensor: str) -> float | None:
        if tensor not in errors:
            return 200.0 if tensor in graph_inputs else None  # the model's input is exact
        value = errors[tensor].get("xmodel_err", math.inf)
        return value if math.isfinite(value) else 200.0  # an exact match: as clean as a signal gets

    def output_sqnr(node: Any) -> float | None:
        """At the node's output, or where the quantizer measures it: past a Relu / Clip folded into
        the node's output range (that tensor is gone from the int8 graph)."""
        tensor = node.output[0]
        while tensor not in errors and len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in (
                _FOLDED_OPS):
            tensor = consumers[tensor][0].output[0]
        return sqnr(tensor)

    added = {}
    for node in nodes:
        if node.name in candidates and node.input and node.output:
            before, after = sqnr(node.input[0]), output_sqnr(node)
            if before is not None and after is not None:
                added[node.name] = before - after
    return added


def quantize_file(source: Path, dest: Path, request: QuantizeRequest, *,
                  extra_excluded: list[str] | None = None) -> dict[str, Any]:
    import onnx

    config = request.config
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        _pre_process(source, prepared)
        nodes = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
        ignored, first = _kept_in_float(prepared, nodes, config)
        searched = [n for n in extra_excluded or [] if n not in ignored]  # the accuracy-aware search's
        first = [n for n in first if n not in searched]
        multipliers = [] if config.mode == "dynamic" else [
            n for n in lossy_multipliers(prepared) if n not in {*ignored, *searched, *first}]
        excluded = ignored + searched + first + multipliers
        if config.mode == "dynamic":
            info = _dynamic(prepared, dest, config, excluded)
        else:
            info = _static(prepared, dest, request, excluded)
            info["inputs_kept_float"] = keep_inputs_float(dest, prepared, set(excluded))
    return {**info, "ignore_matches": {p: match_names(nodes, [p]) for p in config.ignore}, "nodes_excluded": excluded,
            "first_layers_in_float": first, "multipliers_in_float": multipliers}


def lossy_multipliers(path: Path) -> list[str]:
    """Mul and Div nodes that multiply by a constant which per-tensor int8 would wipe out
    (compress.contracts.loses_a_multiplier): left in float, since the quantizer stores such a
    constant like an activation (the outlier model's [1000, 1, 1, ...] became [255, 0, 0, ...])."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {i.name: i for i in graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return [node.name for node in graph.node if node.op_type in ("Mul", "Div")
            and any(name in constants and loses_a_multiplier(numpy_helper.to_array(constants[name]))
                    for name in node.input)]


def keep_inputs_float(path: Path, prepared: Path, excluded: set[str]) -> list[str]:
    """Make the nodes left in float read float: an input that comes through a QuantizeLinear ->
    DequantizeLinear pair is read from the tensor before the pair, which is what "left in float"
    means. It also keeps ONNX Runtime's WeightBiasQuantization pass, which quantizes the weights of a
    float Conv / Gemm that reads a dequantized input, per tensor, when it loads the file, from
    undoing it (EfficientNet-Lite0 with its first depthwise conv left in float: cosine 0.912 to fp32,
    against 0.985 with the pass off). The quantizer folds a Relu / Clip into the range of the pair
    that follows it; where it did, the activation is put back in front of the float node. Pairs
    nothing reads any more are removed. Returns the nodes rewired."""
    import onnx

    model = onnx.load(str(path))
    before = onnx.load(str(prepared), load_external_data=False).graph
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    producers_before = {output: node for node in before.node for output in node.output}
    constants_before = {i.name: i for i in before.initializer}
    names = {i.name for i in graph.initializer} | set(producers)
    rewired = []
    for node in [n for n in graph.node if n.name in excluded]:
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue  # not a quantized activation (a weight stored in int8 has no QuantizeLinear)
            source = q.input[0]
            folded = producers_before.get(source)
            if folded is not None and folded.op_type in ("Relu", "Clip") and \
                    getattr(producers.get(source), "op_type", None) != folded.op_type:
                activation = onnx.NodeProto()
                activation.CopyFrom(folded)
                activation.name = f"{folded.name}_kept_float_{node.name}"
                activation.input[0] = source
                activation.output[0] = f"{source}_kept_float_{node.name}"
                for bound in activation.input[1:]:  # Clip's min / max, dropped with the folded node
                    if bound and bound not in names and bound in constants_before:
                        graph.initializer.append(constants_before[bound])
                        names.add(bound)
                graph.node.insert(list(graph.node).index(node), activation)
                source = activation.output[0]
            node.input[index] = source
            rewired.append(node.name)
    if not rewired:
        return []
    outputs = {o.name for o in graph.output}
    while True:  # drop Q/DQ nodes whose outputs nothing reads
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    onnx.save(model, str(path))
    return sorted(set(rewired))


def _static(prepared: Path, dest: Path, request: QuantizeRequest, excluded: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    config = request.config
    count = min(config.calibration.samples, len(next(iter(request.calibration.values()))))
    samples = {name: array[:count] for name, array in zip(request.input_names, request.calibration.values(),
                                                           strict=True)}

    class Reader(CalibrationDataReader):  # every input of each batch
        def __init__(self) -> None:
            self._batches = iter({name: array[i:i + 16] for name, array in samples.items()}
                                 for i in range(0, count, 16))

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration.method]
    activations = config.activations or "uint8"  # the fast x86 path: uint8 activations, int8 weights
    symmetric = bool(config.symmetric_activations)
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                             "CalibTensorRangeSymmetric": symmetric}
    if method == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = config.calibration.percentile
    arguments: dict[str, Any] = {
        "quant_format": "QDQ", "per_channel": config.per_channel,
        "activation_type": "QUInt8" if activations == "uint8" else "QInt8", "weight_type": "QInt8",
        "calibrate_method": method.name, "nodes_to_exclude": excluded, "extra_options": extra,
        "calibration_samples": count}
    try:
        cache = None
        if method == CalibrationMethod.Entropy:
            cache = _entropy_ranges(prepared, Reader(), symmetric)
            arguments["calibration_cache"] = {"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1]}
        quantize_static(
            str(prepared), str(dest), None if cache else Reader(), quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel, activation_type=QuantType.QUInt8 if activations == "uint8" else
            QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=excluded,
            extra_options=extra, calibration_cache_path=cache)
    except Exception as exc:
        raise tool_failure("ONNX Runtime quantization", exc) from None
    return {"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "mode": "static",
            "activations": f"{activations} {'symmetric' if symmetric else 'asymmetric'}", "weights": "int8",
            "per_channel": config.per_channel, "calibration_method": config.calibration.method,
            "calibration_samples": count,
            "quantizer_call": {"function": "onnxruntime.quantization.quantize_static", "arguments": arguments}}


# quantize_static's entropy calibrator keeps its default of 128 histogram bins for 128 quantized bins,
# which leaves the KL search one candidate, the whole range: entropy would give minmax's ranges. The
# calibrator is run here with 2048 bins, as its own docs advise, and its ranges passed as a cache.
ENTROPY_BINS = (2048, 128)


def _entropy_ranges(prepared: Path, reader: Any, symmetric: bool) -> Path:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    folder = prepared.parent
    calibrator = create_calibrator(prepared, None, augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS[0], "num_quantized_bins": ENTROPY_BINS[1],
                                                  "symmetric": symmetric})
    calibrator.collect_data(reader)
    cache = folder / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _dynamic(prepared: Path, dest: Path, config: Any, excluded: list[str]) -> dict[str, Any]:
    """int8 weights; activations quantized per call from their actual range (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(prepared), str(dest), per_channel=config.per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded)
    except Exception as exc:
        raise tool_failure("ONNX Runtime dynamic quantization", exc) from None
    arguments = {"per_channel": config.per_channel, "weight_type": "QInt8", "nodes_to_exclude": excluded}
    return {"quantizer": "onnxruntime.quantize_dynamic", "mode": "dynamic", "weights": "int8",
            "activations": "uint8, quantized at run time", "per_channel": config.per_channel,
            "quantizer_call": {"function": "onnxruntime.quantization.quantize_dynamic", "arguments": arguments}}
