"""A small supervised training loop shared by from-scratch training and distillation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from compress.data import Split, batches

if TYPE_CHECKING:
    import torch
    from rich.console import Console

LossFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor"], "torch.Tensor"]


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(model: torch.nn.Module, split: Split, *, epochs: int, lr: float, batch_size: int, seed: int,
        loss_fn: LossFn, console: Console, description: str, weight_decay: float = 0.0,
        max_steps: int | None = None, lr_field: str = "train.lr") -> list[float]:
    """Train with Adam and a cosine schedule; `loss_fn(logits, labels, inputs)`. Returns the mean
    loss of each epoch (of the steps taken in it, when `max_steps` ends training inside one). A loss
    that stops being finite ends training with a StageError naming `lr_field`: weights that went to
    NaN would otherwise be exported, converted and measured as if they were a model."""
    import numpy as np
    import torch

    from compress.console import task
    from compress.errors import StageError

    seed_everything(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen ones stay as they are
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(split) // batch_size)
    steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history: list[float] = []
    taken = 0
    model.train()
    with task(console, description, steps) as update:
        for epoch in range(epochs):
            if taken == steps:
                break
            total, count = 0.0, 0
            for batch in batches(split, batch_size, shuffle=True, seed=seed + epoch):
                if taken == steps:
                    break
                taken += 1
                inputs, labels = batch.tensors(), None if batch.y is None else torch.from_numpy(np.array(batch.y))
                optimizer.zero_grad()
                loss = loss_fn(model(*inputs), labels, inputs)
                if not torch.isfinite(loss):
                    raise StageError(f"{description}: training diverged: the loss is {float(loss)} at step {taken} "
                                     f"(epoch {epoch + 1}); lower the learning rate ({lr:g})", field=lr_field)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
                update(note=f"loss {total / count:.4f}")
            history.append(total / count)
    model.eval()
    return history


def freeze_parameters(model: torch.nn.Module, patterns: list[str], *, file: str | None = None,
                      field: str = "freeze") -> list[str]:
    """Stop training the parameters whose names match the globs (every other one trains); returns
    the frozen names. A glob that matches nothing is an error naming the field."""
    import fnmatch

    from compress.errors import InputError

    frozen: list[str] = []
    for index, pattern in enumerate(patterns):
        hits = [name for name, _ in model.named_parameters() if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise InputError(f"{pattern!r} matches no parameter", file=file, field=f"{field}[{index}]")
        frozen.extend(hits)
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point():  # integer ones (a quantizer's bit width) never train
            parameter.requires_grad_(name not in frozen)
    return frozen
