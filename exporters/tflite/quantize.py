"""torch -> int8 .tflite. Static: litert-torch's PT2E quantizer, weights and activations in int8,
calibrated on the same samples as every other format; quantized inputs and outputs carry a scale
and zero point, which the LiteRT runtime side applies, so callers keep passing floats. Dynamic:
litert-torch's dynamic recipe (int8 weights, activations quantized per call). With an accuracy
budget, torch modules are left in float, most harmful first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.contracts import Exported, QuantizeRequest, match_names
from compress.errors import StageError, first_line
from compress.exporters.tflite.export import prepare_for_tflite


def _leave_in_float(modules: list[str]) -> Any:
    """A PT2E quantizer that annotates nothing inside `modules` (so they stay in float).

    Its own set_module_name(name, None) is refused ("not supported yet"), and its name filter reads
    module names from a key format torch 2.13 no longer uses; so the annotations of nodes under
    those modules are dropped after annotating."""
    from litert_torch.quantize import pt2e_quantizer

    class LeaveInFloat(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            if modules:
                for node in model.graph.nodes:
                    paths = [entry[0] for entry in (node.meta.get("nn_module_stack") or {}).values()]
                    if any(p == m or p.startswith(m + ".") for p in paths for m in modules):
                        node.meta.pop("quantization_annotation", None)
            return model

    return LeaveInFloat()


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
    if request.validation is None:
        info = _convert(request, ignored, dest)
    else:  # accuracy-aware: torch modules left in float, most harmful first
        import torch

        reference = request.validation.score(request.source.path)
        # leaf modules holding parameters or buffers: the layers PT2E annotates for int8
        candidates = [name for name, m in torch_model.named_modules()
                      if name and not list(m.children()) and (list(m.parameters()) or list(m.buffers()))
                      and not isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        info = {}

        def quantize_leaving(excluded: list[str], path: Path) -> None:
            info.update(_convert(request, ignored + excluded, path))

        report = request.validation.search(quantize_leaving, candidates, reference, dest)
        info["nodes_excluded"] = ignored + report.kept_in_float
        info.update(report.as_info())
    info["ignore_matches"] = {p: match_names(modules, [p]) for p in request.config.ignore}
    return Exported(path=dest, info=info)


def _convert(request: QuantizeRequest, ignored: list[str], dest: Path) -> dict[str, Any]:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    config, torch_model = request.config, request.torch_model
    channels_last = bool(request.source.attributes.get("input_transpose"))
    samples = torch.from_numpy(request.calibration[: config.calibration.samples])
    module, example = prepare_for_tflite(torch_model, samples[:1], channels_last)
    if config.mode == "dynamic" and not ignored:
        return _convert_dynamic(module, example, channels_last, dest)
    dynamic = config.mode == "dynamic"
    prefix = "inner." if module is not torch_model and hasattr(module, "inner") else ""
    if dynamic:
        chosen = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=True)
        described = {"is_per_channel": config.per_channel, "is_dynamic": True}
    else:
        chosen, described = static_config(config)
    quantizer = _leave_in_float([prefix + name for name in ignored]).set_global(chosen)
    try:
        graph = torch.export.export(module, (example,)).module()
        graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for index in range(1 if dynamic else len(samples)):  # dynamic ranges need no calibration
                _, sample = prepare_for_tflite(torch_model, samples[index:index + 1], channels_last)
                graph(sample)
        graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
        litert_torch.convert(graph, (example,),
                             quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)).export(str(dest))
    except Exception as exc:
        raise StageError(f"TFLite int8 conversion failed: {type(exc).__name__}: {first_line(exc)}",
                         field="quantize") from None
    return {"quantizer": "litert_torch PT2E", "scheme": "symmetric int8 weights", "per_channel": config.per_channel,
            "mode": config.mode, "calibration_samples": 0 if dynamic else len(samples),
            "channels_last": channels_last, "nodes_excluded": ignored,
            "quantizer_call": {"function": "torchao prepare_pt2e / convert_pt2e with litert_torch PT2EQuantizer",
                               "arguments": {**described, "modules_left_in_float": ignored,
                                             "calibration_samples": 0 if dynamic else len(samples)}}}


def _convert_dynamic(module: Any, example: Any, channels_last: bool, dest: Path) -> dict[str, Any]:
    """int8 weights, activations quantized per call, through litert-torch's dynamic recipe (AI Edge
    Quantizer on the converted model). PT2E's dynamic scheme gives embedding tables a non-zero
    zero point, which LiteRT's EMBEDDING_LOOKUP refuses to run; this recipe quantizes them
    symmetrically (MiniLM: embedding cosine 0.998 against fp32 here)."""
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes

    try:
        litert_torch.convert(module, (example,), quant_config=quant_recipes.full_dynamic_recipe()).export(str(dest))
    except Exception as exc:
        raise StageError(f"TFLite dynamic int8 conversion failed: {type(exc).__name__}: {first_line(exc)}",
                         field="quantize") from None
    return {"quantizer": "litert_torch full_dynamic_recipe (AI Edge Quantizer)", "mode": "dynamic",
            "scheme": "int8 weights per channel, activations per call", "calibration_samples": 0,
            "channels_last": channels_last, "nodes_excluded": [],
            "quantizer_call": {"function": "litert_torch.convert", "arguments": {
                "quant_config": "litert_torch.generative.quantize.quant_recipes.full_dynamic_recipe()"}}}
