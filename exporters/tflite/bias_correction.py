"""Empirical bias correction of a PT2E fake-quantized graph, before the converter reads it.

int8 shifts the mean of each layer's outputs (rounded weights, clipped and rounded activations), and
in a deep chain of convolutions those shifts add up: EfficientNet-Lite0's logits drifted enough to
flip near-tie crops. Layer by layer, in graph order, each convolution's / linear layer's bias takes
the difference between its mean output per channel in float and in the int8 graph as corrected so
far (Nagel et al., "Data-Free Quantization", §4.2, measured on data as NNCF's BiasCorrection does).
The int8 grid is untouched; only the float biases the converter quantizes to int32 move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# The layers whose bias is corrected: their output is linear in their weights.
_LAYER_NAMES = ("conv1d", "conv2d", "convolution", "linear")


def correct_biases(graph: Any, samples: Sequence[tuple[Any, ...]]) -> dict[str, float]:
    """Correct, in place, the bias of every layer of `graph` (a converted PT2E GraphModule with
    quantize -> dequantize pairs, `fold_quantize=False`) that has one, on `samples` (each a tuple of
    batch-1 inputs). Returns each corrected bias's largest change, by the layer's node name.

    Two passes over the samples: one in float for the means wanted, one through the int8 graph node
    by node, all samples at each node, so that each layer is measured after the layers before it were
    corrected; a bias change is added to that layer's stored outputs (a bias adds to every output of
    its channel), so nothing is computed twice."""
    import torch

    layers = [n for n in graph.graph.nodes if n.op == "call_function" and _is_layer(n) and _bias(graph, n) is not None]
    if not layers or not samples:
        return {}
    for node in layers:
        _own_copy(graph, node)
    with passed_through(graph):  # the float model
        wanted = _mean_outputs(graph, layers, samples)
    steps = [torch.fx.Interpreter(graph, garbage_collect_values=True) for _ in samples]
    for step, sample in zip(steps, samples, strict=True):
        step.args_iter = iter(sample)
    changes: dict[str, float] = {}
    with torch.no_grad():
        for node in graph.graph.nodes:
            if node.op == "output":
                break
            for step in steps:
                step.env[node] = step.run_node(node)
            if node in wanted:
                bias = _bias(graph, node)
                delta = wanted[node] - sum(_channel_mean(node, s.env[node]) for s in steps) / len(steps)
                bias.add_(delta.to(bias.dtype))
                for step in steps:
                    step.env[node] = step.env[node] + _per_channel(node, delta, step.env[node])
                changes[node.name] = float(delta.abs().max())
            for step in steps:
                for done in step.user_to_last_uses.get(node, []):
                    del step.env[done]
    return changes


def _own_copy(graph: Any, node: Any) -> None:
    """Give the graph its own copy of a layer's bias: torch.export shares parameters with the model
    it exported, whose biases must stay as they are."""
    import torch

    bias = node.args[2] if len(node.args) > 2 else node.kwargs["bias"]
    path, _, leaf = bias.target.rpartition(".")
    owner = graph.get_submodule(path) if path else graph
    tensor = getattr(owner, leaf)
    if isinstance(tensor, torch.nn.Parameter):
        setattr(owner, leaf, torch.nn.Parameter(tensor.detach().clone(), requires_grad=False))
    else:
        owner.register_buffer(leaf, tensor.detach().clone())


def _channel_mean(node: Any, value: Any) -> Any:
    """A layer's output averaged over every position but the channel (axis 1 of a convolution's
    output, the last of a linear layer's)."""
    value = value.float()
    channels = value.movedim(1, -1) if value.dim() > 2 and "conv" in str(node.target) else value
    return channels.reshape(-1, channels.shape[-1]).mean(0)


def _per_channel(node: Any, delta: Any, value: Any) -> Any:
    """`delta` shaped to add to `value` channel by channel."""
    if value.dim() > 2 and "conv" in str(node.target):
        return delta.to(value.dtype).view(1, -1, *([1] * (value.dim() - 2)))
    return delta.to(value.dtype)


def _is_layer(node: Any) -> bool:
    return getattr(node.target, "__name__", "").split(".")[0] in _LAYER_NAMES and str(node.target).startswith("aten.")


def _bias(graph: Any, node: Any) -> Any:
    """The float bias tensor a layer node reads (a get_attr), or None."""
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if getattr(bias, "op", None) != "get_attr":
        return None
    for lookup in (graph.get_parameter, graph.get_buffer):
        try:
            tensor = lookup(bias.target)
        except AttributeError:
            continue
        return tensor if tensor.is_floating_point() else None
    return None


def _mean_outputs(graph: Any, nodes: list[Any], samples: Sequence[tuple[Any, ...]]) -> dict[Any, Any]:
    """Each node's output averaged over the samples and every position but the channel, from one
    graph cut after the last node."""
    import torch

    cut = _cut_after(graph, nodes)
    sums: dict[Any, Any] = {}
    with torch.no_grad():
        for sample in samples:
            for node, value in zip(nodes, cut(*sample), strict=True):
                mean = _channel_mean(node, value)
                sums[node] = mean if node not in sums else sums[node] + mean
    return {node: total / len(samples) for node, total in sums.items()}


def _cut_after(graph: Any, nodes: list[Any]) -> Any:
    """A GraphModule sharing `graph`'s weights that returns the outputs of `nodes`."""
    import torch

    copied = torch.fx.Graph()
    mapping: dict[Any, Any] = {}
    copied.graph_copy(graph.graph, mapping)
    copied.output(tuple(mapping[n] for n in nodes))
    cut = torch.fx.GraphModule(graph, copied)
    cut.graph.eliminate_dead_code()
    cut.recompile()
    return cut


def _same(value: Any) -> Any:
    return value


@contextmanager
def passed_through(graph: Any, chosen: Callable[[Any, Any], bool] = lambda _dq, _q: True) -> Iterator[bool]:
    """Within the block, each dequantize(quantize(x)) pair of the graph that `chosen(dequantize node,
    quantize node)` picks gives x back (all of them: the float model). Yields whether any did."""
    saved = []
    for node in graph.graph.nodes:
        source = node.args[0] if node.args else None
        if is_qdq(node, "dequantize") and getattr(source, "op", None) == "call_function" \
                and is_qdq(source, "quantize") and chosen(node, source):
            saved.append((node, node.target, node.args, node.kwargs))
            node.target, node.args, node.kwargs = _same, (source.args[0],), {}
    if saved:
        graph.recompile()
    try:
        yield bool(saved)
    finally:
        for node, target, args, kwargs in saved:
            node.target, node.args, node.kwargs = target, args, kwargs
        if saved:
            graph.recompile()


def is_qdq(node: Any, kind: str = "") -> bool:
    """A quantized_decomposed quantize_* / dequantize_* op (`kind` narrows it to one of the two)."""
    name = str(node.target)
    return name.startswith(f"quantized_decomposed.{kind}") and "quantize_per" in name
