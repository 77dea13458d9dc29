"""torch -> int8 .tflite through litert-torch's PT2E quantizer: weights and activations in int8,
calibrated on the same samples as every other format. Quantized inputs and outputs carry a scale
and zero point, which the LiteRT runtime side applies, so callers keep passing floats."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import StageError
from compress.quantize import match_names

if TYPE_CHECKING:
    import numpy as np

    from compress.artifact import Artifact
    from compress.recipe import QuantizeConfig


class LiteRtQuantizer:
    name = "litert-pt2e"
    format = "tflite"
    requires = ("litert_torch",)
    install_hint = "pip install 'edge-compress[tflite]'"

    def quantize(self, source: Artifact, folder: Path, config: QuantizeConfig, calibration: np.ndarray, *,
                 input_name: str, torch_model: Any = None, file: str | None = None) -> tuple[Path, dict[str, Any]]:
        import litert_torch
        import torch
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        from exporters.tflite import prepare_for_tflite

        if torch_model is None:
            raise StageError("the TFLite int8 path quantizes the torch model, which is not at hand",
                             field="quantize")
        channels_last = bool(source.info.get("channels_last"))
        samples = torch.from_numpy(calibration[: config.calibration.samples])
        module, example = prepare_for_tflite(torch_model, samples[:1], channels_last)
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=False))
        # `quantize.ignore` globs name torch modules here; those stay in float
        modules = [name for name, _ in torch_model.named_modules() if name]
        ignored = match_names(modules, config.ignore)
        prefix = "inner." if module is not torch_model and hasattr(module, "inner") else ""
        for name in ignored:
            quantizer.set_module_name(prefix + name, None)
        dest = folder / "model.tflite"
        try:
            graph = torch.export.export(module, (example,)).module()
            graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for index in range(len(samples)):
                    _, sample = prepare_for_tflite(torch_model, samples[index:index + 1], channels_last)
                    graph(sample)
            graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
            litert_torch.convert(graph, (example,),
                                 quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)).export(str(dest))
        except Exception as exc:
            raise StageError(f"TFLite int8 conversion failed: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                             field="quantize") from None
        return dest, {"quantizer": "litert_torch PT2E", "scheme": "symmetric int8",
                      "per_channel": config.per_channel, "calibration_samples": len(samples),
                      "channels_last": channels_last, "nodes_excluded": ignored,
                      "ignore_matches": {p: match_names(modules, [p]) for p in config.ignore}}
