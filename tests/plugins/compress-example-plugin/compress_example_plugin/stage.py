"""`scale_logits`: multiply the model's output by a constant factor.

The pipeline saves a torch artifact as the recipe's factory, the module structure and the
state_dict, so a stage must keep the module structure: wrapping the model in a new module would
change the state_dict keys. This stage scales the weight and bias of the last nn.Linear in place,
which multiplies the logits by `factor` when that layer produces the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from compress.contracts import StageResult

if TYPE_CHECKING:
    import torch

    from compress.contracts import StageContext


class ScaleLogitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: float = Field(2.0, gt=0)


class ScaleLogitsStage:
    Config = ScaleLogitsConfig

    def __init__(self, config: ScaleLogitsConfig) -> None:
        self.config = config

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult:
        import torch

        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise ValueError("scale_logits needs a model whose last layer is an nn.Linear")
        last = linears[-1]
        factor = self.config.factor
        with torch.no_grad():
            last.weight.mul_(factor)
            if last.bias is not None:
                last.bias.mul_(factor)
        return StageResult(model=model, info={"factor": factor})
