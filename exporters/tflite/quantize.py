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
    quantizer = _leave_in_float([prefix + name for name in ignored]).set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=dynamic))
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
    return {"quantizer": "litert_torch PT2E", "scheme": "symmetric int8", "per_channel": config.per_channel,
            "mode": config.mode, "calibration_samples": 0 if dynamic else len(samples),
            "channels_last": channels_last, "nodes_excluded": ignored}


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
            "channels_last": channels_last, "nodes_excluded": []}
