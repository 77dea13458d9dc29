"""`qat`: fine-tune the model with int8 fake quantization in its forward pass (NNCF), so that the
int8 artifacts the formats make from it lose less than post-training int8 of the same model.

NNCF inserts fake quantizers (per-channel symmetric weights, per-tensor activations) initialised
on the calibration split, and the model is fine-tuned against its own fp32 outputs (distillation)
and the labels. Each weight then takes its fake-quantized value (a point of its int8 grid) and the
quantizers are dropped: the stage hands on a plain torch model of the same class, which every
format exports and quantizes with its own int8 quantizer, as after any other stage.

`when: over_budget` fine-tunes only when simulated post-training int8 (NNCF's quantizers before
training, scored on the calibration split) misses `quantize.max_accuracy_drop`; otherwise the model
goes on unchanged and the stage says why.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compress.console import activity
from compress.contracts import StageContext, StageResult
from compress.errors import InputError, StageError, tool_failure

if TYPE_CHECKING:
    import numpy as np
    import torch

    from compress.recipe import Recipe


class QatConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    when: Literal["always", "over_budget"] = "always"
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(64, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    temperature: float = Field(2.0, gt=0)
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5  # share of the loss that is distillation from fp32
    samples: int = Field(300, gt=0)  # calibration samples that initialise the quantizers' ranges
    freeze: list[str] = Field(default_factory=list)


def _score(model: torch.nn.Module, ctx: StageContext, reference: np.ndarray | None) -> float:
    """The task metric on the calibration split (never the test split the report uses)."""
    from compress.verify import reference_outputs

    split = ctx.data.calibration
    return float(ctx.plan.metric(reference_outputs(model, split.inputs), split.y, reference=reference))


class QatStage:
    Config = QatConfig
    requires = ("torch", "nncf")
    libraries = ("nncf",)

    def __init__(self, config: QatConfig) -> None:
        self.config = config

    @staticmethod
    def check_recipe(config: QatConfig, recipe: Recipe) -> tuple[str, str] | None:
        """(field, problem) where the rest of the recipe leaves this stage nothing to do."""
        quantize = recipe.quantize
        if quantize is None or not quantize.int8:
            return "", "quantization-aware training makes int8 artifacts: it needs quantize.precision to include int8"
        if quantize.mode == "dynamic":
            chosen = "" if "mode" in quantize.model_fields_set else " (chosen by quantize.mode auto)"
            return "", ("quantization-aware training trains against static int8 (activation ranges fixed by "
                        f"calibration), and quantize.mode is dynamic{chosen}: set quantize.mode: static")
        if config.when == "over_budget" and quantize.max_accuracy_drop is None:
            return "when", "over_budget needs quantize.max_accuracy_drop (the budget post-training int8 is held to)"
        return None

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult:
        import nncf
        import numpy as np
        import torch

        from compress.budget import Budget
        from compress.tasks import distillation_loss
        from compress.train import fit, freeze_parameters
        from compress.verify import reference_outputs

        config = self.config
        recipe = ctx.plan.recipe
        assert recipe.quantize is not None
        metric = ctx.plan.metric
        if ctx.data.calibration.y is None and metric.needs_labels:
            raise InputError(f"qat scores int8 with {recipe.task.metric}, which needs labelled calibration data "
                             "(data)", file=ctx.file, field="qat")
        model = model.eval()
        fp32 = copy.deepcopy(model)  # the teacher, and the plain model the trained weights go back into
        reference = None if metric.needs_labels else reference_outputs(fp32, ctx.data.calibration.inputs)
        fp32_score = _score(fp32, ctx, reference)

        calibration = ctx.data.calibration.head(config.samples)
        batches = [calibration.take(slice(i, i + 32)).tensors() for i in range(0, len(calibration), 32)]
        activity(ctx.console, f"qat: int8 fake quantizers (NNCF) on {len(calibration)} calibration samples")
        try:
            # weights per tensor when the formats will quantize them so, so that their grid is the one
            # trained on (per channel is NNCF's own default; forcing it also reaches weights NNCF keeps
            # per tensor, and TinyGPT then fails inside NNCF)
            per_tensor = nncf.quantization.advanced_parameters.QuantizationParameters(per_channel=False)
            advanced = {} if recipe.quantize.per_channel else {
                "advanced_parameters": nncf.AdvancedQuantizationParameters(weights_quantization_params=per_tensor)}
            quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(calibration), **advanced)
        except Exception as exc:
            raise tool_failure(f"NNCF fake quantization of {type(model).__name__}", exc, field="qat") from None
        outputs = reference_outputs(quantized, ctx.data.calibration.inputs)
        if not np.isfinite(outputs).all():  # nothing to train from: every step's loss would be NaN
            raise StageError(f"NNCF's fake-quantized {type(fp32).__name__} gives non-finite outputs on the calibration "
                             "split before any training: quantization-aware training cannot start from it", field="qat")
        ptq_score = float(metric(outputs, ctx.data.calibration.y, reference=reference))
        per = "channel" if recipe.quantize.per_channel else "tensor"
        info: dict[str, Any] = {"fake_quantization": f"nncf {nncf.__version__}: int8, weights per {per}",
                                "validation_metric": {"fp32": round(fp32_score, 6),
                                                      "int8_before_qat": round(ptq_score, 6)}}
        if config.when == "over_budget":
            assert recipe.quantize.max_accuracy_drop is not None
            budget = Budget.parse(recipe.quantize.max_accuracy_drop, metric.lower_is_better)
            if budget.met(fp32_score, ptq_score):
                info["skipped"] = (f"simulated post-training int8 is within max_accuracy_drop {budget.describe()} "
                                   f"({ptq_score:.4f} against {fp32_score:.4f} in fp32): no fine-tuning")
                return StageResult(model=fp32, info=info)

        frozen = freeze_parameters(quantized, config.freeze, file=ctx.file, field="qat.freeze")
        loss_fn = distillation_loss(ctx.task_kind, fp32, config.temperature,
                                    1.0 if ctx.data.train.y is None else config.alpha)
        history = fit(quantized, ctx.data.train, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                      seed=ctx.seed, loss_fn=loss_fn, console=ctx.console, description="qat",
                      weight_decay=config.weight_decay, max_steps=config.max_steps, lr_field="qat.lr")
        info["validation_metric"]["int8_after_qat"] = round(_score(quantized, ctx, reference), 6)
        info["epoch_losses"] = [round(v, 5) for v in history]
        if frozen:
            info["frozen_parameters"] = len(frozen)
        with torch.no_grad():
            weights = _fake_quantized_weights(quantized, batches[0])
            trained = fp32.state_dict()
            state = quantized.state_dict()
            trained.update({name: state[name] for name in trained})
            trained.update(weights)
            fp32.load_state_dict(trained)
        info["weights_on_int8_grid"] = len(weights)
        return StageResult(model=fp32.eval(), info=info)


def _fake_quantized_weights(quantized: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """Each quantized weight as its quantizer leaves it (by parameter name): what the model computed
    with in training. Activation quantizers are left out: each format calibrates its own."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.model_graph_manager import get_const_data, get_const_node
    from nncf.torch.quantization.layers import BaseQuantizer

    graph = build_nncf_graph(quantized, example)
    weights: dict[str, torch.Tensor] = {}
    for hook_name, quantizer in get_hook_storage(quantized).named_hooks():
        if not isinstance(quantizer, BaseQuantizer):
            continue
        hook_type, op_name, port = decode_hook_name(hook_name)
        if hook_type != "pre_hooks":
            continue
        constant = get_const_node(graph.get_node_by_name(op_name), port, graph)
        if constant is None:  # an activation
            continue
        weights[constant.layer_attributes.name] = quantizer.eval()(get_const_data(constant, quantized)).detach().clone()
    return weights
