"""torch -> int8 .tflite. Static: litert-torch's PT2E quantizer, weights and activations in int8,
calibrated on the same samples as every other format; quantized inputs and outputs carry a scale
and zero point, which the LiteRT runtime side applies, so callers keep passing floats. Dynamic:
litert-torch's dynamic recipe (int8 weights, activations quantized per call). With
`bias_correction: true`, static int8 biases are corrected for the shift int8 puts in each layer's
mean output (bias_correction.py). With an
accuracy budget, torch modules are left in float, most harmful first."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compress.contracts import Exported, QuantizeRequest, WeightedOp, first_layers, loses_a_multiplier, match_names
from compress.errors import tool_failure
from compress.exporters.tflite.bias_correction import correct_biases, is_qdq, passed_through
from compress.exporters.tflite.export import prepare_for_tflite

# Calibration samples bias correction measures means on: 16, 32 and 128 gave the same agreement on
# EfficientNet-Lite0 within two crops of 128; 32 takes 4 s there.
BIAS_CORRECTION_SAMPLES = 32


def _leave_in_float(modules: list[str], prefix_through: list[str] | None = None) -> Any:
    """litert-torch's PT2E quantizer, with what it gets wrong on real models put right:

    - A conv followed by ReLU6 (hardtanh) is observed after the clamp, as a conv followed by ReLU
      is: litert-torch shares the conv's pre-clamp range with the ReLU6, which gave EfficientNet-
      Lite0's [0, 6] activations a scale of 0.79 where 0.0235 fits (cosine to fp32 0.821 -> 0.984).
    - Nodes inside `modules` are left unannotated (in float). Its own set_module_name(name, None) is
      refused ("not supported yet") and its name filter reads a key format torch 2.13 no longer uses.
    - Every node up to the last node of the `prefix_through` modules (and the activation right after
      it) is left in float: the first-layer policy keeps a prefix of the graph from the input in float,
      since the converter turns a single float layer between int8 ones back into an int8 kernel.
    - A parameter-free op (activation, add, pooling) fed only by nodes left in float is left in float
      too: quantizing it would put int8 noise between two float layers (EfficientNet-Lite0 with every
      layer left in float still lost 3 points of agreement to its ReLU6s and adds).
    - A node whose annotation shares the range of a node left in float is left in float too (it
      failed with `KeyError: conv2d` before)."""
    from litert_torch.quantize import pt2e_quantizer

    class LeaveInFloat(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            if self.global_config is not None and not self.global_config.is_dynamic:
                _observe_after_clamp(model, self.global_config)
            nodes = list(model.graph.nodes)
            dropped = [n for n in nodes if _in_modules(n, modules)]
            multipliers = [n for n in nodes if _multiplies_by_a_lossy_constant(model, n)]
            self.multipliers_in_float = [n.name for n in multipliers]
            dropped += _through_next_weighted_ops(multipliers)
            if prefix_through:
                last = max((i for i, n in enumerate(nodes) if _in_modules(n, prefix_through)), default=-1)
                while 0 <= last < len(nodes) - 1 and nodes[last + 1].target in _targets()["activations"] \
                        and nodes[last + 1].args[0] is nodes[last]:
                    last += 1
                dropped += nodes[: last + 1]
            dropped = _grow_over_parameter_free_ops(nodes, dropped)
            for node in dropped:
                node.meta.pop("quantization_annotation", None)
            _drop_dangling_shares(model)
            return model

    return LeaveInFloat()


@functools.cache
def _targets() -> dict[str, frozenset[Any]]:
    """The aten ops the fixes look for (torch imported only when quantizing)."""
    import torch

    aten = torch.ops.aten
    return {"convs": frozenset({aten.conv1d.default, aten.conv2d.default, aten.convolution.default}),
            "clamps": frozenset({aten.hardtanh.default, aten.hardtanh_.default}),
            "weighted": frozenset({aten.conv1d.default, aten.conv2d.default, aten.convolution.default,
                                   aten.linear.default, aten.matmul.default, aten.mm.default, aten.bmm.default,
                                   aten.addmm.default, aten.conv_transpose2d.input, aten.conv_transpose1d.default}),
            "activations": frozenset({aten.hardtanh.default, aten.hardtanh_.default, aten.relu.default,
                                      aten.relu_.default})}


def _grow_over_parameter_free_ops(nodes: list[Any], dropped: list[Any]) -> list[Any]:
    """`dropped` and, in graph order, every op without weights whose inputs all come from it."""
    left = set(dropped)
    grown = list(dropped)
    for node in nodes:
        if node in left or node.op != "call_function" or node.target in _targets()["weighted"]:
            continue
        inputs = [n for n in node.all_input_nodes if n.op == "call_function"]
        if inputs and all(n in left for n in inputs):
            left.add(node)
            grown.append(node)
    return grown


def _multiplies_by_a_lossy_constant(model: Any, node: Any) -> bool:
    """A mul or div by a constant that per-tensor int8 would wipe out (compress.contracts.
    loses_a_multiplier). PT2E quantizes such a constant as it does an activation."""
    import operator

    import torch

    if node.op != "call_function" or node.target not in (torch.ops.aten.mul.Tensor, torch.ops.aten.div.Tensor):
        return False
    for arg in node.args:
        if getattr(arg, "op", None) == "get_attr":
            value = operator.attrgetter(arg.target)(model)
            if isinstance(value, torch.Tensor) and loses_a_multiplier(value.detach().float().numpy()):
                return True
    return False


def _through_next_weighted_ops(starts: list[Any]) -> list[Any]:
    """`starts` and every op after them up to and including the next layers with weights. Left in
    float: the converter turns a float op between int8 ones back into int8 (a multiplier left alone
    was quantized all the same), so the float region runs on into the layer that reads it."""
    region: list[Any] = []
    frontier = list(starts)
    while frontier:
        node = frontier.pop()
        if node in region:
            continue
        region.append(node)
        if node not in starts and node.target in _targets()["weighted"]:
            continue  # the region ends with this layer
        frontier.extend(user for user in node.users if user.op == "call_function")
    return region


def _in_modules(node: Any, modules: list[str]) -> bool:
    paths = [entry[0] for entry in (node.meta.get("nn_module_stack") or {}).values()]
    return any(p == m or p.startswith(m + ".") for p in paths for m in modules)


def _observe_after_clamp(model: Any, config: Any) -> None:
    """conv -> ReLU6 (or -> hardtanh(-1, 1)), the clamps TFLite fuses into the conv: the range is
    observed at the clamp's output, the conv's own output is not quantized."""
    from litert_torch.quantize.pt2e_quantizer_utils import get_output_act_qspec
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _targets()["clamps"]:
            continue
        bounds = (tuple(node.args[1:3]) + (-1.0, 1.0)[len(node.args) - 1:])[:2]
        conv = node.args[0]
        fused = bounds in ((0, 6), (-1, 1)) and getattr(conv, "target", None) in _targets()["convs"]
        if not fused or len(conv.users) != 1:
            continue
        annotation = conv.meta.get("quantization_annotation")
        if annotation is None or annotation.output_qspec is None:
            continue
        annotation.output_qspec = None
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=get_output_act_qspec(config), _annotated=True)


def _drop_dangling_shares(model: Any) -> None:
    """Leave in float a node whose annotation shares the range of an output or input that is no
    longer quantized (pass-through ops: pooling, reshapes, ReLU6 after a float conv)."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def exists(reference: Any) -> bool:
        if isinstance(reference, tuple):  # an edge (input, node): that node's input annotation
            source, target = reference
            annotation = target.meta.get("quantization_annotation")
            return annotation is not None and source in annotation.input_qspec_map
        annotation = reference.meta.get("quantization_annotation")
        return annotation is not None and annotation.output_qspec is not None

    changed = True
    while changed:
        changed = False
        for node in model.graph.nodes:
            annotation = node.meta.get("quantization_annotation")
            if annotation is None:
                continue
            specs = [annotation.output_qspec, *annotation.input_qspec_map.values()]
            if any(isinstance(spec, SharedQuantizationSpec) and not exists(spec.edge_or_node) for spec in specs):
                node.meta.pop("quantization_annotation")
                changed = True


def torch_layers(model: Any, sample: Any) -> list[WeightedOp]:
    """The model's layers that multiply (convolutions, linear and recurrent layers), by module name,
    in the order one forward pass reaches them, with their MACs per sample: for the first-layer policy."""
    import math

    import torch

    found: dict[str, WeightedOp] = {}

    def record(name: str) -> Any:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if name in found:
                return
            output = output[0] if isinstance(output, tuple) else output
            batch = max(int(samples[0].shape[0]), 1)
            weight = module.weight if hasattr(module, "weight") else None
            if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
                macs = inputs[0].numel() // batch * weight[0].numel()
            elif isinstance(module, torch.nn.modules.conv._ConvNd | torch.nn.Linear):
                macs = output.numel() // batch * weight[0].numel()
            else:  # recurrent: every weight once per step
                steps = inputs[0].shape[1 if module.batch_first else 0] if inputs[0].dim() == 3 else 1
                macs = steps * sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))
            weights = sum(math.prod(p.shape) for n, p in module.named_parameters() if n.startswith("weight"))
            found[name] = WeightedOp(name=name, op_type=type(module).__name__, macs=int(macs), weights=weights,
                                     int8_weights=False, int8_compute=False)
        return hook

    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.RNNBase)
    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
               if name and isinstance(module, kinds)]
    samples = sample if isinstance(sample, tuple) else (sample,)
    try:
        with torch.no_grad():
            model(*samples)
    finally:
        for handle in handles:
            handle.remove()
    return list(found.values())


def _percentile_observer(percentile: float) -> Any:
    """A PT2E observer whose range is each calibration batch's (100 - p)th and pth percentiles,
    averaged over the batches (as NNCF's QUANTILE estimator with a MEAN aggregator)."""
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class PercentileObserver(MinMaxObserver):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.register_buffer("calls", torch.tensor(0))

        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().float().flatten()
            if x.numel() > 1_000_000:  # torch.quantile's limit; an even subsample keeps the shape of it
                x = x[:: -(-x.numel() // 1_000_000)]
            low, high = torch.quantile(x, torch.tensor([1 - percentile / 100, percentile / 100]))
            calls = int(self.calls)
            self.min_val.copy_(low if calls == 0 else (self.min_val * calls + low) / (calls + 1))
            self.max_val.copy_(high if calls == 0 else (self.max_val * calls + high) / (calls + 1))
            self.calls += 1
            return x_orig

    return PercentileObserver


def static_config(config: Any) -> tuple[Any, dict[str, Any]]:
    """litert-torch's symmetric PT2E config with the recipe's calibration method and activation
    symmetry, and the same as plain data for results.json."""
    import dataclasses

    import torch
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    base = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel)
    method = config.calibration.method
    observer = MinMaxObserver if method == "minmax" else _percentile_observer(config.calibration.percentile)
    symmetric = bool(config.symmetric_activations)
    activations = QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127,
        qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine, is_dynamic=False,
        observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    chosen = dataclasses.replace(base, input_activation=activations, output_activation=activations)
    described = {"is_per_channel": config.per_channel, "activation_observer": observer.__name__
                 + (f"(percentile={config.calibration.percentile})" if method == "percentile" else ""),
                 "activation_qscheme": "per_tensor_symmetric" if symmetric else "per_tensor_affine",
                 "activation_dtype": "int8", "weight_qscheme": "per_channel_symmetric" if config.per_channel
                 else "per_tensor_symmetric"}
    return chosen, described


def quantize(request: QuantizeRequest) -> Exported:
    torch_model = request.torch_model
    dest = request.folder / "model.tflite"
    modules = [name for name, _ in torch_model.named_modules() if name]
    ignored = match_names(modules, request.config.ignore)
    first: list[str] = []
    if request.config.mode == "static":
        import torch

        policy = request.config.first_layers
        sample = tuple(torch.from_numpy(array[:1]) for array in request.calibration.values())
        first = first_layers(torch_layers(torch_model, sample), policy.in_float, policy.max_macs_share)
    if request.validation is None:
        info = _convert(request, ignored, dest, first)
    else:  # accuracy-aware: torch modules left in float, most harmful first
        import torch

        reference = request.validation.score(request.source.path)
        # leaf modules holding parameters or buffers: the layers PT2E annotates for int8
        candidates = [name for name, m in torch_model.named_modules()
                      if name and not list(m.children()) and (list(m.parameters()) or list(m.buffers()))
                      and not isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        info = {}

        def quantize_leaving(excluded: list[str], path: Path) -> None:
            info.update(_convert(request, ignored + excluded, path, first))

        def ranking(_int8: Path) -> list[str]:
            return rank_by_output_error(request, ignored, first, candidates)

        static = request.config.mode == "static"  # dynamic ranges have no fake-quantized graph to rank in
        report = request.validation.search(quantize_leaving, candidates, reference, dest,
                                           ranking=ranking if static else None, ranked_by=RANKED_BY)
        info["nodes_excluded"] = ignored + report.kept_in_float
        info.update(report.as_info())
    info["ignore_matches"] = {p: match_names(modules, [p]) for p in request.config.ignore}
    info["first_layers_in_float"] = first
    return Exported(path=dest, info=info)


RANKED_BY = ("the output error each layer's int8 adds: undone one layer at a time in PT2E's fake-quantized "
             "torch graph, one calibration")


def rank_by_output_error(request: QuantizeRequest, ignored: list[str], first: list[str], candidates: list[str],
                         count: int = 32) -> list[str]:
    """Candidates ranked by how much undoing each one's int8 (its weights and the activations around
    it) lowers the error of the model's outputs against float, most first, on `count` validation
    samples. One calibration of PT2E's graph with the format's own quantizer, then one torch pass per
    candidate: far cheaper than one TFLite conversion per candidate, and it scores the outputs the
    metric sees rather than each layer's own noise. Biases are not corrected here: a bias corrected
    for a layer's int8 is wrong once that layer is float (the outlier model's search kept the wrong
    layer when ranked on a corrected graph); each trial's artifact is corrected as it is made."""
    import torch
    from torchao.quantization.pt2e import quantize_pt2e

    assert request.validation is not None
    torch_model = request.torch_model
    channels_last = bool(request.source.attributes.get("input_transpose"))
    calibration = tuple(torch.from_numpy(a[: request.config.calibration.samples])
                        for a in request.calibration.values())
    module, example = prepare_for_tflite(torch_model, calibration, channels_last)
    prefix = "inner." if module is not torch_model and hasattr(module, "inner") else ""
    chosen, _ = static_config(request.config)
    quantizer = _leave_in_float([prefix + n for n in ignored], [prefix + n for n in first]).set_global(chosen)

    def one_by_one(tensors: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [prepare_for_tflite(torch_model, tuple(t[i:i + 1] for t in tensors), channels_last)[1]
                for i in range(len(tensors[0]))]

    try:
        graph = quantize_pt2e.prepare_pt2e(torch.export.export(module, example).module(), quantizer)
        with torch.no_grad():
            for sample in one_by_one(calibration):
                graph(*sample)
        graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        samples = one_by_one(tuple(torch.from_numpy(a[:count]) for a in request.validation.x.values()))
        with torch.no_grad():
            wanted = [_flat(module(*sample)) for sample in samples]

        def output_error() -> float:
            with torch.no_grad():
                return sum(float(((_flat(graph(*s)) - w) ** 2).sum() / (w ** 2).sum().clamp_min(1e-12))
                           for s, w in zip(samples, wanted, strict=True)) / len(samples)

        everything = output_error()
        lowered: dict[str, float] = {}
        for name in candidates:
            with _int8_undone(graph, prefix + name) as undone:
                if undone:
                    lowered[name] = everything - output_error()
    except Exception as exc:
        raise tool_failure("TFLite int8 ranking (PT2E fake-quantized graph)", exc) from None
    ranked = sorted(lowered, key=lambda n: lowered[n], reverse=True)
    return ranked + [c for c in candidates if c not in lowered]


def _flat(output: Any) -> Any:
    import torch

    parts = output if isinstance(output, tuple | list) else (output,)
    return torch.cat([p.detach().float().flatten() for p in parts])


@contextmanager
def _int8_undone(graph: Any, module: str) -> Iterator[bool]:
    """Within the block, the quantize -> dequantize pairs on a module's weights, inputs and outputs
    (through the activation fused after it) pass their float input through unchanged."""
    nodes = graph.graph.nodes
    own = {n for n in nodes if n.op == "call_function" and not is_qdq(n) and _in_modules(n, [module])}
    for node in nodes:  # the ReLU / ReLU6 right after it carries its output range
        if node.op == "call_function" and node.target in _targets()["activations"] and node.args[0] in own:
            own.add(node)
    with passed_through(graph, lambda dq, q: q.args[0] in own or any(user in own for user in dq.users)) as undone:
        yield undone


def _convert(request: QuantizeRequest, ignored: list[str], dest: Path, first: list[str]) -> dict[str, Any]:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    config, torch_model = request.config, request.torch_model
    channels_last = bool(request.source.attributes.get("input_transpose"))
    samples = tuple(torch.from_numpy(array[: config.calibration.samples]) for array in request.calibration.values())
    count = len(samples[0])
    module, example = prepare_for_tflite(torch_model, samples, channels_last)
    if config.mode == "dynamic" and not ignored:
        return _convert_dynamic(module, example, channels_last, dest)
    dynamic = config.mode == "dynamic"
    prefix = "inner." if module is not torch_model and hasattr(module, "inner") else ""
    if dynamic:
        chosen = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=True)
        described = {"is_per_channel": config.per_channel, "is_dynamic": True}
    else:
        chosen, described = static_config(config)
    quantizer = _leave_in_float([prefix + name for name in ignored],
                                [prefix + name for name in first]).set_global(chosen)
    try:
        graph = torch.export.export(module, example).module()
        graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for index in range(1 if dynamic else count):  # dynamic ranges need no calibration
                _, sample = prepare_for_tflite(torch_model, tuple(s[index:index + 1] for s in samples), channels_last)
                graph(*sample)
        graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        corrected = {} if dynamic or not config.bias_correction else correct_biases(
            graph, [prepare_for_tflite(torch_model, tuple(s[i:i + 1] for s in samples), channels_last)[1]
                    for i in range(min(count, BIAS_CORRECTION_SAMPLES))])
        litert_torch.convert(graph, example,
                             quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)).export(str(dest))
    except Exception as exc:
        raise tool_failure("TFLite int8 conversion", exc) from None
    return {"quantizer": "litert_torch PT2E", "scheme": "symmetric int8 weights", "per_channel": config.per_channel,
            "mode": config.mode, "calibration_samples": 0 if dynamic else count,
            "multipliers_in_float": getattr(quantizer, "multipliers_in_float", []),
            "channels_last": channels_last, "nodes_excluded": ignored,
            "quantizer_call": {"function": "torchao prepare_pt2e / convert_pt2e with litert_torch PT2EQuantizer",
                               "arguments": {**described, "modules_left_in_float": ignored,
                                             "bias_correction": {"layers": len(corrected), "samples": min(
                                                 count, BIAS_CORRECTION_SAMPLES)} if corrected else False,
                                             "graph_in_float_through": first, "observe_after_relu6": not dynamic,
                                             "calibration_samples": 0 if dynamic else count}}}


def _convert_dynamic(module: Any, example: Any, channels_last: bool, dest: Path) -> dict[str, Any]:
    """int8 weights, activations quantized per call, through litert-torch's dynamic recipe (AI Edge
    Quantizer on the converted model). PT2E's dynamic scheme gives embedding tables a non-zero
    zero point, which LiteRT's EMBEDDING_LOOKUP refuses to run; this recipe quantizes them
    symmetrically (MiniLM: embedding cosine 0.998 against fp32 here)."""
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes

    try:
        litert_torch.convert(module, example, quant_config=quant_recipes.full_dynamic_recipe()).export(str(dest))
    except Exception as exc:
        raise tool_failure("TFLite dynamic int8 conversion", exc) from None
    return {"quantizer": "litert_torch full_dynamic_recipe (AI Edge Quantizer)", "mode": "dynamic",
            "scheme": "int8 weights per channel, activations per call", "calibration_samples": 0,
            "channels_last": channels_last, "nodes_excluded": [],
            "quantizer_call": {"function": "litert_torch.convert", "arguments": {
                "quant_config": "litert_torch.generative.quantize.quant_recipes.full_dynamic_recipe()"}}}
