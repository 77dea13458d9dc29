"""`prune`: remove whole channels (torch-pruning), to a channel, MACs or parameter target.

A MACs or parameter target is met by searching the channel ratio on copies of the model, since
MACs fall faster than channels (roughly with the square of the kept fraction in a CNN).
"""

from __future__ import annotations

import copy
import fnmatch
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.console import task
from compress.contracts import StageContext, StageResult
from compress.errors import InputError, StageError

if TYPE_CHECKING:
    import torch


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    importance: Literal["l1", "l2", "taylor"] = "l2"
    pruning_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    target_macs_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    target_params_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    iterative_steps: int = Field(4, gt=0)
    ignore: list[str] = Field(default_factory=list)
    global_pruning: bool = False
    round_to: int | None = Field(None, gt=0)
    # Share of attention heads to remove in modules that declare them (see _attention_modules).
    head_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    # What to do when the model has layers torch-pruning cannot prune (recurrent layers): fail the
    # run (default) or skip this stage and say so in the log and results.
    on_unsupported: Literal["fail", "skip"] = "fail"
    # How far the achieved MACs (or parameter) ratio may land from target_macs_ratio (target_params_ratio),
    # rounding to round_to included; farther fails the stage, naming both.
    tolerance: float = Field(0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        given = [k for k in ("pruning_ratio", "target_macs_ratio", "target_params_ratio") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of pruning_ratio, target_macs_ratio, target_params_ratio")
        return self


def _channels(model: torch.nn.Module) -> dict[str, int]:
    """Output channels (features) of each convolution and linear layer."""
    from torch import nn

    return {name: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def _output_layers(model: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> list[torch.nn.Module]:
    """Layers whose output is the model's output: pruning them would change what the model means."""
    import torch

    produced: dict[int, torch.nn.Module] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            out = model(*example)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = out if isinstance(out, (tuple, list)) else [out]
    return [produced[id(o)] for o in outputs if id(o) in produced]


_PROJECTIONS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))


def _head_count(module: torch.nn.Module) -> int | None:
    """Its head count: `num_heads`, or Hugging Face's `num_attention_heads`."""
    for name in ("num_heads", "num_attention_heads"):
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _set_head_count(module: torch.nn.Module, heads: int) -> None:
    """What the module's forward reads after pruning: its head count, and Hugging Face's
    `all_head_size` (heads x head size), which sizes the reshape back from heads."""
    if isinstance(getattr(module, "num_heads", None), int):
        module.num_heads = heads
    if isinstance(getattr(module, "num_attention_heads", None), int):
        module.num_attention_heads = heads
        head_size = getattr(module, "attention_head_size", None) or getattr(module, "head_dim", None)
        if isinstance(head_size, int) and isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = heads * head_size


def _attention_modules(model: torch.nn.Module) -> list[tuple[torch.nn.Module, tuple[torch.nn.Module, ...]]]:
    """Attention modules: an int `num_heads` (or Hugging Face's `num_attention_heads`) and
    query/key/value (or q_proj/k_proj/v_proj) Linears. Their projections are pruned by whole heads
    only, so the per-head reshape stays valid."""
    from torch import nn

    found = []
    for module in model.modules():
        if _head_count(module) is None:
            continue
        for names in _PROJECTIONS:
            projections = tuple(getattr(module, n, None) for n in names)
            if all(isinstance(p, nn.Linear) for p in projections):
                found.append((module, projections))
                break
    return found


def _heads_relative_to_the_start(pruner: Any, initial: dict[Any, int]) -> None:
    """torch-pruning's local head pruning removes ceil(cumulative ratio x heads left) at each
    iterative step, so the ratio compounds (4 heads, head_ratio 0.5, 4 steps: 1 head left, not 2).
    Each step is given the share of the heads left that reaches round(initial x (1 - cumulative))."""
    import math

    def target(module: Any) -> float:
        step = min(pruner.current_step, len(pruner.per_step_head_pruning_ratio) - 1)
        cumulative = pruner.per_step_head_pruning_ratio[step]
        left = pruner.num_heads.get(module, 0)
        keep = max(1, round(initial.get(module, left) * (1 - cumulative)))
        return 0.0 if left <= keep else math.nextafter((left - keep) / left, 0.0)  # ceil(share x left) = left - keep

    pruner.get_target_head_pruning_ratio = target


class PruneStage:
    Config = PruneConfig
    requires = ("torch_pruning",)
    libraries = ("torch-pruning",)
    install_hint = "pip install torch-pruning"

    def __init__(self, config: PruneConfig) -> None:
        self.config = config

    def _ignored(self, model: torch.nn.Module, example: tuple[torch.Tensor, ...], file: str) -> list[torch.nn.Module]:
        named = dict(model.named_modules())
        ignored = _output_layers(model, example)
        for index, pattern in enumerate(self.config.ignore):
            hits = [module for name, module in named.items() if name and fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise InputError(f"{pattern!r} matches no layer (layers: {', '.join(n for n in named if n)[:200]})",
                                 file=file, field=f"prune.ignore[{index}]")
            ignored.extend(hits)
        return ignored

    def _prune(self, model: torch.nn.Module, ratio: float, ctx: StageContext, file: str) -> list[int]:
        """Prune `model` in place to a channel ratio, in iterative steps; MACs after each step."""
        import torch
        import torch_pruning as tp

        from compress.tasks import training_loss

        example = ctx.example_input()
        config = self.config
        loss_fn = training_loss(ctx.task_kind)  # taylor importance: gradients of the task loss
        if config.importance == "taylor":
            importance = tp.importance.GroupTaylorImportance()
        else:
            importance = tp.importance.GroupMagnitudeImportance(p=1 if config.importance == "l1" else 2)
        attention = _attention_modules(model)
        num_heads = {proj: _head_count(module) for module, projections in attention for proj in projections}
        head_sizes = {id(module): projections[0].out_features // (_head_count(module) or 1)
                      for module, projections in attention}
        pruner = tp.pruner.BasePruner(
            model, example, importance=importance, pruning_ratio=ratio,
            iterative_steps=config.iterative_steps, ignored_layers=self._ignored(model, example, file),
            global_pruning=config.global_pruning, round_to=config.round_to,
            num_heads=num_heads, prune_num_heads=config.head_ratio is not None, prune_head_dims=False,
            head_pruning_ratio=config.head_ratio or 0.0)
        if config.head_ratio is not None:
            _heads_relative_to_the_start(pruner, dict(num_heads))  # a copy: the pruner updates its own
        macs_per_step = []
        batch = ctx.data.train.head(256)
        for _ in range(config.iterative_steps):
            if config.importance == "taylor":
                if batch.y is None:
                    raise InputError("taylor importance needs labelled training data", file=file,
                                     field="prune.importance")
                model.zero_grad()
                inputs = batch.tensors()
                loss_fn(model(*inputs), torch.from_numpy(batch.y), inputs).backward()
            pruner.step()
            for module, projections in attention:  # the forward pass reads the head count
                # from the query's width: whole heads are removed and head dims kept, and
                # torch-pruning's own count compounds over iterative steps (4 heads -> 0 in 4 steps
                # of head_ratio 0.5 while 1 head's channels remain)
                _set_head_count(module, projections[0].out_features // head_sizes[id(module)])
            macs_per_step.append(int(tp.utils.count_ops_and_params(model, example)[0]))
        model.zero_grad(set_to_none=True)
        return macs_per_step

    def _unsupported(self, model: torch.nn.Module) -> str | None:
        """Why torch-pruning cannot prune this model as configured, or None."""
        from torch import nn

        recurrent = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, nn.RNNBase)
                     and not any(fnmatch.fnmatchcase(name, p) for p in self.config.ignore)}
        if not recurrent:
            return None
        kinds = sorted(set(recurrent.values()))
        return (f"torch-pruning cannot prune the hidden units of recurrent layers ({', '.join(kinds)}: "
                f"{', '.join(recurrent)}; it fails on them, Torch-Pruning issues #44 and #404): add them to "
                "prune.ignore to prune the other layers, or set prune.on_unsupported: skip")

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult:
        import torch_pruning as tp

        file = ctx.file
        config = self.config
        reason = self._unsupported(model)
        if reason is not None:
            if config.on_unsupported == "fail":
                raise StageError(reason, file=file, field="prune")
            ctx.log.warning("prune skipped: %s", reason)
            ctx.console.log(f"[yellow]prune skipped[/]: {reason}")
            return StageResult(model=model, info={"skipped": reason})
        example = ctx.example_input()
        base_macs, base_params = (int(v) for v in tp.utils.count_ops_and_params(model, example))
        channels_before = _channels(model)
        searched = None
        if config.pruning_ratio is not None:
            ratio = config.pruning_ratio
        else:
            ratio, searched = self._search_ratio(model, ctx, file, base_macs, base_params)
        model.eval()
        self._prune(model, ratio, ctx, file)
        model.eval()
        macs, params = (int(v) for v in tp.utils.count_ops_and_params(model, example))
        heads = [_head_count(module) for module, _ in _attention_modules(model)]
        channels_after = _channels(model)
        info: dict[str, Any] = {
            "pruning_ratio": round(ratio, 4), "macs_before": base_macs, "macs_after": macs,
            **({"attention_heads": heads} if heads else {}), "params_before": base_params, "params_after": params,
            "macs_ratio": round(macs / base_macs, 4), "params_ratio": round(params / base_params, 4),
            "channels": {name: [before, channels_after.get(name, before)] for name, before in channels_before.items()
                         if channels_after.get(name, before) != before}}
        target = self._target()
        if target is not None:
            name, value = target
            achieved = info["macs_ratio" if name == "target_macs_ratio" else "params_ratio"]
            info["target"] = {name: value, "achieved": achieved, "tolerance": config.tolerance}
            if abs(achieved - value) > config.tolerance + 1e-9:  # searched, and still off: say both
                above, below = getattr(self, "_around", (achieved, achieved))
                raise StageError(
                    f"{name} {value} is not reachable within ±{config.tolerance:g}: the achieved ratio steps from "
                    f"{above:.4f} to {below:.4f} around it"
                    + (f" (channels rounded to multiples of {config.round_to})" if config.round_to else "")
                    + f"; the closest, {achieved:.4f}, is off by {abs(achieved - value):.4f}: change the target, "
                    "lower round_to, or widen prune.tolerance", file=file, field=f"prune.{name}")
        if searched is not None:
            info["search_steps"] = searched
        return StageResult(model=model, info=info)

    def _target(self) -> tuple[str, float] | None:
        if self.config.target_macs_ratio is not None:
            return "target_macs_ratio", self.config.target_macs_ratio
        if self.config.target_params_ratio is not None:
            return "target_params_ratio", self.config.target_params_ratio
        return None

    def _search_ratio(self, model: torch.nn.Module, ctx: StageContext, file: str, base_macs: int,
                      base_params: int) -> tuple[float, int]:
        """The channel ratio whose pruned copy lands closest to the MACs / parameter target: bisection
        to the ratio where the achieved ratio crosses the target, then the closer of the two sides
        (rounding to round_to makes the achieved ratio a staircase, so the crossing can be a big step)."""
        import torch_pruning as tp

        by_macs = self.config.target_macs_ratio is not None
        target = self.config.target_macs_ratio if by_macs else self.config.target_params_ratio
        assert target is not None
        base = base_macs if by_macs else base_params
        example = ctx.example_input()

        def achieved(ratio: float) -> float:
            trial = copy.deepcopy(model)
            self._prune(trial, ratio, ctx, file)
            macs, params = tp.utils.count_ops_and_params(trial, example)
            value = float(macs if by_macs else params) / base
            update(note=f"channel ratio {ratio:.3f} -> {value:.3f}")
            return value

        # torch-pruning skips a group it would empty (above ~0.9, or sooner when round_to rounds what
        # is left down to nothing), so the achieved ratio falls with the channel ratio only up to a
        # point: find it on a coarse grid, then bisect below it.
        # the grid's 9 trials and about 8 of bisection, shown as one bar
        with task(ctx.console, "prune search", 17) as update:
            return self._search(achieved, target, by_macs, file)

    def _search(self, achieved: Any, target: float, by_macs: bool, file: str | None) -> tuple[float, int]:
        grid = {ratio: achieved(ratio) for ratio in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}
        low, high, steps = 0.0, min(grid, key=lambda r: (grid[r], r)), len(grid)
        best = grid[high]
        if best > target:
            name = "target_macs_ratio" if by_macs else "target_params_ratio"
            limit = "ignored layers" + (f" and round_to {self.config.round_to}" if self.config.round_to else "")
            raise StageError(f"cannot reach {name} {target}: pruning 90% of the prunable channels "
                             f"leaves {best:.3f} ({limit} limit it)", file=file, field=f"prune.{name}")
        high_value, low_value = best, 1.0
        while high - low > 0.005:
            middle = (low + high) / 2
            steps += 1
            value = achieved(middle)
            if value <= target:
                high, high_value = middle, value
            else:
                low, low_value = middle, value
        self._around = (low_value, high_value)  # the achieved ratios on either side of the target
        if abs(low_value - target) < abs(high_value - target):
            return low, steps  # just above the target, and closer to it than the step below
        return high, steps
