"""Training from scratch: `train.max_steps` ends training after that many optimizer steps, inside an
epoch if need be, and the learning-rate schedule spans the steps taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from compress.data.base import Split
from compress.errors import StageError
from compress.train import fit


def _fit(max_steps: int | None, epochs: int = 3) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    rng = np.random.default_rng(0)
    split = Split({"input": rng.random((40, 4), dtype=np.float32)}, rng.integers(0, 3, 40))
    seen: list[float] = []

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, _inputs: object) -> torch.Tensor:
        seen.append(len(labels))
        return torch.nn.functional.cross_entropy(logits, labels)

    history = fit(model, split, epochs=epochs, lr=0.1, batch_size=8, seed=0, loss_fn=loss_fn,
                  console=Console(quiet=True), description="train", max_steps=max_steps)
    return history, seen


def test_every_batch_of_every_epoch_without_max_steps() -> None:
    history, seen = _fit(None)
    assert len(history) == 3 and seen == [8] * 15  # 40 samples in batches of 8, three times


def test_max_steps_stops_inside_an_epoch() -> None:
    history, seen = _fit(7)
    assert len(seen) == 7 and len(history) == 2  # 5 steps of the first epoch, 2 of the second


def test_max_steps_past_the_epochs_changes_nothing() -> None:
    assert _fit(100)[1] == _fit(None)[1]


def test_a_loss_that_turns_nan_ends_training_naming_the_learning_rate() -> None:
    model = torch.nn.Linear(4, 3)
    split = Split({"input": np.ones((16, 4), dtype=np.float32)}, np.zeros(16, dtype=np.int64))
    calls: list[int] = []

    def diverging(logits: torch.Tensor, labels: torch.Tensor, _inputs: object) -> torch.Tensor:
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(StageError) as diverged:
        fit(model, split, epochs=2, lr=0.5, batch_size=4, seed=0, loss_fn=diverging, console=Console(quiet=True),
            description="train original", lr_field="model.train.lr")
    assert diverged.value.field == "model.train.lr"
    assert diverged.value.message == ("train original: training diverged: the loss is nan at step 3 (epoch 1); lower "
                                      "the learning rate (0.5)")
    assert len(calls) == 3  # stopped there, not after the epochs
