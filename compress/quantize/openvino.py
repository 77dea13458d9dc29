"""OpenVINO IR fp32 -> int8 with NNCF post-training quantization."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import StageError
from compress.quantize import match_names

if TYPE_CHECKING:
    import numpy as np

    from compress.artifact import Artifact
    from compress.recipe import QuantizeConfig


class NncfQuantizer:
    name = "nncf"
    format = "openvino"
    requires = ("nncf", "openvino")
    install_hint = "pip install 'edge-compress[openvino]'"

    def quantize(self, source: Artifact, folder: Path, config: QuantizeConfig, calibration: np.ndarray, *,
                 input_name: str, torch_model: Any = None, file: str | None = None) -> tuple[Path, dict[str, Any]]:
        import nncf
        import openvino as ov

        model = ov.Core().read_model(str(source.path / "model.xml"))
        names = [op.get_friendly_name() for op in model.get_ordered_ops()]
        ignored = match_names(names, config.ignore)
        samples = calibration[: config.calibration.samples]
        dataset = nncf.Dataset([samples[i:i + 1] for i in range(len(samples))])
        advanced = None
        if config.calibration.method == "minmax":
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet

            advanced = AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
        try:
            quantized = nncf.quantize(
                model, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
                model_type=nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
                ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
                advanced_parameters=advanced)
        except Exception as exc:
            raise StageError(f"NNCF quantization failed: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                             field="quantize") from None
        ir = folder / "ir"
        ir.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(ir / "model.xml"), compress_to_fp16=False)
        return ir, {"quantizer": "nncf.quantize", "preset": "performance",
                    "activations_range": "minmax" if advanced else "nncf default (quantile)",
                    "calibration_samples": len(samples), "model_type": config.model_type,
                    "nodes_excluded": ignored,
                    "ignore_matches": {p: match_names(names, [p]) for p in config.ignore}}

