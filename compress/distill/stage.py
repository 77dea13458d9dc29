"""`distill`: fine-tune the student on the train split against a teacher's softened logits.

Loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * cross-entropy(student, labels)
for classifiers and language models (per token); an embedding student matches the teacher's vectors
by cosine. See compress.tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.contracts import StageContext, StageResult

if TYPE_CHECKING:
    import torch


class TeacherModel(BaseModel):
    """Another model to learn from: a factory (+ weights) or a trusted whole-model file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    factory: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    file: str | None = None
    trust: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TeacherModel:
        if (self.factory is None) == (self.file is None):
            raise ValueError("give exactly one of 'factory' or 'file'")
        return self


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    teacher: Literal["original"] | TeacherModel = "original"
    epochs: int = Field(5, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)
    temperature: float = Field(4.0, gt=0)
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.7
    weight_decay: float = Field(0.0, ge=0)
    # Parameter-name globs kept as they are: a large embedding table costs most of each optimizer
    # step in a small transformer and is not what pruning changed.
    freeze: list[str] = Field(default_factory=list)


class DistillStage:
    Config = DistillConfig
    requires = ("torch",)
    libraries = ()

    def __init__(self, config: DistillConfig) -> None:
        self.config = config

    def _teacher(self, ctx: StageContext) -> torch.nn.Module:
        if self.config.teacher == "original":
            return ctx.original
        from compress.modelio import build_model

        return build_model(self.config.teacher, ctx.plan, prefix="distill.teacher",  # type: ignore[arg-type]
                           calling=ctx.plan.recipe.model)

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult:
        from compress.tasks import distillation_loss
        from compress.train import fit, freeze_parameters

        config = self.config
        teacher = self._teacher(ctx).eval()
        loss_fn = distillation_loss(ctx.task_kind, teacher, config.temperature, config.alpha)
        frozen = freeze_parameters(model, config.freeze, file=ctx.file, field="distill.freeze")
        history = fit(model, ctx.data.train, epochs=config.epochs, lr=config.lr,
                      batch_size=config.batch_size, seed=ctx.seed, loss_fn=loss_fn, console=ctx.console,
                      description="distill", weight_decay=config.weight_decay, lr_field="distill.lr")
        freeze_parameters(model, [])
        info: dict[str, Any] = {"epoch_losses": [round(v, 5) for v in history]}
        if frozen:
            info["frozen_parameters"] = len(frozen)
        return StageResult(model=model, info=info)
