"""`quantize.mode: auto` (the default): static or dynamic int8, chosen from what the model computes.

Static int8 fixes every activation's range from calibration samples; that holds for feed-forward
nets (CNNs, MLPs), and it is the fastest. Where activations are multiplied by activations
(attention) or carried through time (recurrent layers), ranges vary by input and static ranges clip:
MiniLM's embeddings kept cosine 0.357 to fp32 with static int8 on ONNX Runtime here and 0.9937 with
dynamic (0.955 and 0.9983 on LiteRT). Dynamic int8 quantizes activations from their actual range on
each call. The choice and its reason are recorded in results.json; setting `mode` overrides it.
"""

from __future__ import annotations

from typing import Any

# Torch functions that multiply two tensors (attention's Q.K^T and weights.V are two of them).
_PRODUCTS = ("matmul", "bmm", "baddbmm", "einsum")
_PRODUCT_METHODS = ("matmul", "__matmul__", "__rmatmul__", "bmm", "baddbmm")
_ATTENTION_FUNCTIONS = ("scaled_dot_product_attention", "multi_head_attention_forward")


def choose_mode(model: Any, example: Any) -> tuple[str, str]:
    """("static" | "dynamic", why) for a torch model, from one forward pass on `example`."""
    import torch

    recurrent = sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.RNNBase)})
    if recurrent:
        return "dynamic", (f"the model has {'/'.join(recurrent)} layer(s): activations carried through time vary "
                           "by input, so they are quantized per call")
    if _multiplies_activations(model, example):
        return "dynamic", ("the model multiplies activations by activations (attention): their ranges vary by "
                           "input, so they are quantized per call")
    return "static", "a feed-forward model: activation ranges calibrated on samples (the fastest int8)"


def _multiplies_activations(model: Any, example: Any) -> bool:
    """Whether a forward pass multiplies two tensors that both depend on the input. The input (or,
    for token ids, each embedding's output) is the only thing that carries a gradient: weights are
    frozen for the pass, so a product of two gradient-carrying tensors is activation x activation."""
    import torch
    from torch.overrides import TorchFunctionMode

    functional = torch.nn.functional
    products = {getattr(torch, name) for name in _PRODUCTS}
    products |= {getattr(torch.Tensor, name) for name in _PRODUCT_METHODS}
    attention = {getattr(functional, name) for name in _ATTENTION_FUNCTIONS if hasattr(functional, name)}
    found: list[bool] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in attention:
                found.append(True)
            elif func in products:
                flat = [a for a in args if isinstance(a, torch.Tensor)]
                flat += [t for a in args if isinstance(a, list | tuple) for t in a if isinstance(t, torch.Tensor)]
                if sum(t.requires_grad for t in flat) >= 2:
                    found.append(True)
            return func(*args, **kwargs)

    def carry(_module: Any, _inputs: Any, output: Any) -> Any:
        return output.detach().requires_grad_(True) if isinstance(output, torch.Tensor) and \
            output.is_floating_point() else output

    frozen = [p for p in model.parameters() if p.requires_grad]
    hooks = [m.register_forward_hook(carry) for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for parameter in frozen:
        parameter.requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        inputs = example if isinstance(example, tuple) else (example,)
        inputs = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in inputs)
        with torch.enable_grad(), Watch():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.train(was_training)
    return bool(found)
