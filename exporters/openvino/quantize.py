"""OpenVINO IR fp32 -> int8 with NNCF: post-training quantization (static) or int8 weight
compression (dynamic). With an accuracy budget, NNCF's quantize_with_accuracy_control keeps the most
harmful layers in float; where it cannot (some graphs, other metrics), the per-layer search does."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from compress.contracts import Exported, QuantizeRequest, Validation, first_layers, match_names
from compress.errors import StageError, resource_error

# The ops worth keeping in float when int8 costs too much accuracy (NNCF ignores them by name).
_WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul", "LSTMSequence",
             "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell"}
# Ops whose inputs NNCF quantizes and that can be "kept in float" by removing those quantizers.
_QUANTIZABLE = _WEIGHTED | {"Gather", "Multiply", "Add"}


def _quantized_ops(model: Any) -> set[str]:
    """Names of the ops fed by at least one FakeQuantize (so they compute in int8)."""
    return {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _QUANTIZABLE
            and any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values())}


def _cause(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _run_nncf(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:
        raise resource_error(exc, "quantize.openvino") or StageError(
            f"NNCF quantization failed: {type(exc).__name__}: {_cause(exc)}", field="quantize") from None


def _save(model: Any, ir: Path) -> None:
    import openvino as ov

    ir.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(ir / "model.xml"), compress_to_fp16=False)


def _advanced(config: Any) -> tuple[Any, dict[str, Any]]:
    """NNCF's advanced parameters for the recipe's options, and the same as plain data for results.json."""
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    method = config.calibration.method
    if method == "minmax":
        ranges, described = RangeEstimatorParametersSet.MINMAX, "MINMAX (global min and max)"
    else:  # percentile: each sample's quantiles, averaged (entropy is refused by check_quantize)
        outliers = (100.0 - config.calibration.percentile) / 100.0
        bound = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                              aggregator_type=AggregatorType.MEAN, quantile_outlier_prob=outliers)
        ranges, described = RangeEstimatorParameters(min=bound, max=bound), f"QUANTILE outlier prob {outliers:g}, MEAN"
    signed = {None: None, "int8": True, "uint8": False}[config.activations]
    scheme = None if config.symmetric_activations is None else (
        QuantizationScheme.SYMMETRIC if config.symmetric_activations else QuantizationScheme.ASYMMETRIC)
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=ranges,
        # One scale per activation tensor: NNCF's CPU default quantizes depthwise convs' inputs per
        # channel, whose ranges clip on images unlike the calibration set (EfficientNet-Lite0, photos
        # held out: cosine 0.972 per channel, 0.993 per tensor).
        activations_quantization_params=QuantizationParameters(mode=scheme, signedness_to_force=signed,
                                                               per_channel=False),
        weights_quantization_params=QuantizationParameters(per_channel=config.per_channel),
        disable_bias_correction=config.bias_correction is False)
    activations = {"mode": scheme and str(scheme), "signedness_to_force": signed, "per_channel": False}
    return advanced, {"activations_range_estimator_params": described, "activations_quantization_params": activations,
                      "weights_quantization_params": {"per_channel": config.per_channel},
                      "disable_bias_correction": config.bias_correction is False}


def _items(inputs: dict[str, Any], count: int) -> list[Any]:
    """One sample per item, as the IR takes it: the array of a one-input model, else every input by name."""
    total = min(count, len(next(iter(inputs.values()))))
    if len(inputs) == 1:
        array = next(iter(inputs.values()))
        return [array[i:i + 1] for i in range(total)]
    return [{name: array[i:i + 1] for name, array in inputs.items()} for i in range(total)]


def quantize(request: QuantizeRequest) -> Exported:
    import nncf
    import openvino as ov

    from compress.exporters.openvino import OpenVinoQuantizeOptions

    config, validation = request.config, request.validation
    options = OpenVinoQuantizeOptions.model_validate(config.per_format.get("openvino", {}))
    model = ov.Core().read_model(str(request.source.path / "model.xml"))
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    ignored = match_names(names, config.ignore)
    first: list[str] = []
    if config.mode == "static":
        from compress.exporters.openvino.inspect import readback

        policy = config.first_layers
        first = [n for n in first_layers(readback(request.source.path).ops, policy.in_float, policy.max_macs_share)
                 if n not in ignored]
        ignored = ignored + first
    samples = _items(request.calibration, config.calibration.samples)
    dataset = nncf.Dataset(samples)
    common: dict[str, Any] = {
        "subset_size": len(samples), "preset": nncf.QuantizationPreset.PERFORMANCE,
        "model_type": nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
        "fast_bias_correction": options.fast_bias_correction,
        "ignored_scope": nncf.IgnoredScope(names=ignored) if ignored else None,
    }
    advanced, advanced_described = _advanced(config)
    info: dict[str, Any] = {
        "quantizer": "nncf.quantize", "preset": "performance", "calibration_samples": len(samples),
        "model_type": options.model_type, "nodes_excluded": ignored, "first_layers_in_float": first,
        "ignore_matches": {p: match_names(names, [p]) for p in config.ignore},
        "quantizer_call": {"function": "nncf.quantize", "arguments": {
            "subset_size": len(samples), "preset": "PERFORMANCE", "model_type": options.model_type,
            "fast_bias_correction": options.fast_bias_correction, "ignored_scope": ignored,
            "advanced_parameters": advanced_described}}}
    ir = request.folder / "ir"
    dynamic = config.mode == "dynamic"
    if dynamic:
        info.update({"quantizer": "nncf.compress_weights", "mode": "dynamic", "weights": "int8 (asymmetric)",
                     "activations": "left to the runtime", "calibration_samples": 0,
                     "quantizer_call": {"function": "nncf.compress_weights", "arguments": {
                         "mode": "INT8_ASYM", "ignored_scope": ignored}}})

    def quantize_leaving(excluded: list[str], path: Path) -> None:
        scope = nncf.IgnoredScope(names=ignored + excluded) if ignored + excluded else None
        if dynamic:  # int8 weights only: data-free
            _save(_run_nncf(lambda: nncf.compress_weights(
                model.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)), path)
            return
        arguments = {**common, "ignored_scope": scope}
        _save(_run_nncf(lambda: nncf.quantize(model, dataset, advanced_parameters=advanced, **arguments)), path)

    if validation is None:
        quantize_leaving([], ir)
        return Exported(path=ir, info=info)
    reference = validation.score(request.source.path)
    quantize_leaving([], ir)
    default_score = validation.score(ir)
    default_step = {"kept_in_float": [], "validation_metric": round(default_score, 6)}
    if validation.met(reference, default_score):
        report = validation.report(reference, default_score, [], [default_step])
        return Exported(path=ir, info={**info, **report.as_info()})
    default_ops = _quantized_ops(ov.Core().read_model(str(ir / "model.xml")))
    shutil.rmtree(ir)
    try:  # NNCF's own accuracy control first (static int8 of a higher-is-better metric with labels)
        if dynamic or validation.y is None or validation.budget.lower_is_better:
            raise ValueError("NNCF accuracy control covers static int8 scored against labels, higher is better")
        final, stopped = _accuracy_control(model, dataset, validation, common, advanced)
        _save(final, ir)
        score = validation.score(ir)  # scored here, as every candidate is: NNCF's own figure is not reported
        kept = sorted(default_ops - _quantized_ops(final))
        report = validation.report(reference, score, kept,
                                   [default_step, {"kept_in_float": kept, "validation_metric": round(score, 6)}])
        if stopped:
            report.stopped = stopped
        info["quantizer"] = "nncf.quantize_with_accuracy_control"
    except Exception as exc:  # it cannot compile some graphs (an LSTMSequence here): search ourselves
        shutil.rmtree(ir, ignore_errors=True)
        info["accuracy_control_failed"] = f"{type(exc).__name__}: {_cause(exc)}"
        ordered = [op.get_friendly_name() for op in model.get_ordered_ops()
                   if op.get_type_name() in _WEIGHTED and op.get_friendly_name() not in ignored]
        report = validation.search(quantize_leaving, ordered, reference, ir)
        info["quantizer"] = "nncf.quantize + per-layer search"
    info["nodes_excluded"] = ignored + report.kept_in_float
    return Exported(path=ir, info={**info, **report.as_info()})


def _accuracy_control(model: Any, dataset: Any, validation: Validation, common: dict[str, Any], advanced: Any
                      ) -> tuple[Any, str]:
    """NNCF's accuracy control within the search's bounds: at most `max_trials` iterations (each
    reverts a group of quantizers to float and validates), and once `max_seconds` have passed every
    validation answers with the float model's score, which ends NNCF's search where it stands. The
    model it returns is then scored by the caller, never taken on NNCF's word. Returns the model and
    why it stopped early ('max_seconds'), or ''."""
    import nncf
    import numpy
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    assert validation.y is not None
    items = list(zip(_items(validation.x, len(validation)), validation.y, strict=True))
    deadline = time.monotonic() + validation.max_seconds
    seen: dict[str, float] = {}

    def validation_fn(compiled: Any, data: Any) -> float:
        if "float" in seen and time.monotonic() > deadline:
            seen["timed_out"] = 1.0
            return seen["float"]
        rows = list(data)
        logits = numpy.concatenate([compiled(x)[0] for x, _ in rows])
        score = float(validation.metric(logits, numpy.array([y for _, y in rows])))
        seen.setdefault("float", score)  # NNCF validates the float model first
        return score

    budget = validation.budget
    final = nncf.quantize_with_accuracy_control(
        model, dataset, nncf.Dataset(items), validation_fn, max_drop=budget.value,
        drop_type=nncf.DropType.RELATIVE if budget.relative else nncf.DropType.ABSOLUTE,
        advanced_quantization_parameters=advanced,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=validation.max_trials),
        **common)
    return final, "max_seconds" if "timed_out" in seen else ""
