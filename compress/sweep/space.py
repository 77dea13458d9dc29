"""Which configurations a sweep tries: every combination (grid), seeded random draws, or Optuna's TPE
asking for the next ones from the results so far."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from compress.sweep_config import Range, SweepConfig


def _draw(values: list[Any] | Range, rng: random.Random) -> Any:
    if isinstance(values, list):
        return values[rng.randrange(len(values))]
    if values.log:
        value = math.exp(rng.uniform(math.log(values.low), math.log(values.high)))
    else:
        value = rng.uniform(values.low, values.high)
    return round(value) if values.integer else value


def planned(config: SweepConfig) -> list[dict[str, Any]] | None:
    """The whole list of trials for grid and random (fixed up front, so a resumed sweep runs exactly
    the same ones); None for tpe, which asks as results come in."""
    names = list(config.parameters)
    if config.strategy == "grid":
        lists = [config.parameters[name] for name in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]  # type: ignore[arg-type]
    if config.strategy == "random":
        rng = random.Random(config.seed)
        assert config.trials is not None
        return [{name: _draw(config.parameters[name], rng) for name in names} for _ in range(config.trials)]
    return None


class TPE:
    """Optuna's TPE sampler over the sweep's parameters, asked and told by hand (the trials run on Ray,
    not inside Optuna). Objectives: the metric in its direction, latency and size minimized."""

    def __init__(self, config: SweepConfig, lower_is_better: bool) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.config = config
        self.distributions: dict[str, Any] = {}
        self._choices: dict[str, list[Any]] = {}
        for name, values in config.parameters.items():
            if isinstance(values, Range):
                distributions = optuna.distributions
                kind = distributions.IntDistribution if values.integer else distributions.FloatDistribution
                low, high = (int(values.low), int(values.high)) if values.integer else (values.low, values.high)
                self.distributions[name] = kind(low, high, log=values.log)
            else:
                # Optuna's choices must be plain scalars: a list value (e.g. [onnx]) is chosen by index
                self._choices[name] = values
                self.distributions[name] = optuna.distributions.CategoricalDistribution(list(range(len(values))))
        directions = ["minimize" if lower_is_better else "maximize", "minimize", "minimize"]
        sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=min(4, config.trials or 4))
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self._open: dict[int, Any] = {}

    def _decode(self, params: dict[str, Any]) -> dict[str, Any]:
        return {name: self._choices[name][value] if name in self._choices else value for name, value in params.items()}

    def _encode(self, params: dict[str, Any]) -> dict[str, Any]:
        encoded = {}
        for name, value in params.items():
            encoded[name] = self._choices[name].index(value) if name in self._choices else value
        return encoded

    def ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(self.distributions)
        self._open[trial.number] = trial
        return trial.number, self._decode(trial.params)

    def tell(self, number: int, values: tuple[float, float, float] | None) -> None:
        import optuna

        trial = self._open.pop(number)
        if values is None or not all(math.isfinite(v) for v in values):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, list(values))

    def remember(self, params: dict[str, Any], values: tuple[float, float, float] | None) -> None:
        """A trial finished before a resume: the sampler learns from it without running it again."""
        import optuna

        state = optuna.trial.TrialState.COMPLETE if values is not None else optuna.trial.TrialState.FAIL
        self.study.add_trial(optuna.trial.create_trial(
            params=self._encode(params), distributions=self.distributions, state=state,
            values=list(values) if values is not None else None))
