"""Verify every artifact on every runtime that loads its format, on every target.

Each measurement is the device agent in its own process: it keeps the outputs of the test split
(so accuracy comes from the very process that was timed) and times batch-`latency.batch_size`
calls after a warm-up. Agreement is against the original torch model's predictions.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress import registry, tasks
from compress.metrics import needs_labels
from compress.results import LatencyStats, Measurement, Parity
from compress.targets import resolve_all as resolve_targets
from compress.targets import slug as target_slug

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from compress.artifact import Artifact
    from compress.data import Splits
    from compress.recipe import LoadedRecipe, ParityThresholds


def parity(outputs: np.ndarray, reference: np.ndarray, reference_name: str,
           thresholds: ParityThresholds, kind: str = "classification") -> Parity:
    """Max abs error, mean per-sample cosine and agreement (top-1, or cosine for an embedding
    model); each judged by its threshold."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    cosine = tasks.mean_cosine(a, b)
    agree = tasks.agreement(kind, outputs, reference)
    failures = []
    if not np.isfinite(max_abs):
        failures.append("outputs are not finite")
    if thresholds.max_abs_error is not None and not max_abs <= thresholds.max_abs_error:
        failures.append(f"max abs error {max_abs:.3g} > {thresholds.max_abs_error:g}")
    if not cosine >= thresholds.min_cosine:
        failures.append(f"cosine {cosine:.5f} < {thresholds.min_cosine:g}")
    if not agree >= thresholds.min_agreement:
        failures.append(f"top-1 agreement {agree:.4f} < {thresholds.min_agreement:g}")
    return Parity(reference=reference_name, max_abs_error=max_abs, cosine=cosine, agreement=agree,
                  thresholds=thresholds.model_dump(), passed=not failures, failures=failures)


def reference_outputs(model: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])


class Verifier:
    def __init__(self, loaded: LoadedRecipe, data: Splits, original: torch.nn.Module, folder: Path,
                 console: Console, torch_models: dict[str, torch.nn.Module] | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.recipe.verify
        self.data = data
        self.folder = folder
        self.console = console
        self.reference = reference_outputs(original, data.test.x)
        self.torch_models = torch_models or {}
        self._parent_outputs: dict[str, np.ndarray] = {}
        file = str(loaded.path)
        self.metric_name = loaded.recipe.task.metric
        self.kind = loaded.recipe.task.kind
        self.metric = registry.load("compress.metrics", self.metric_name, file=file, field="task.metric")
        self.runtimes = [registry.require("compress.runtimes", name, file=file, field=f"verify.runtimes[{i}]")
                         for i, name in enumerate(self.config.runtimes)]
        self.targets = [(target.name, target) for target in resolve_targets(self.config.targets, file=file)]

    def _torch_source(self, artifact: Artifact) -> Artifact | None:
        """The torch artifact this one was made from (itself, for a torch artifact)."""
        current: Artifact | None = artifact
        while current is not None and current.format != "torch":
            current = self._by_id.get(current.parent or "")
        return current

    def _parity(self, artifact: Artifact, outputs: np.ndarray) -> Parity | None:
        source = self._torch_source(artifact)
        if source is None or source.id not in self.torch_models:
            return None
        if source.id not in self._parent_outputs:
            self._parent_outputs[source.id] = reference_outputs(self.torch_models[source.id], self.data.test.x)
        thresholds = self.config.parity[artifact.precision]  # type: ignore[index]
        return parity(outputs, self._parent_outputs[source.id], source.name, thresholds, self.kind)

    def verify(self, artifacts: list[Artifact]) -> list[Measurement]:
        self._by_id = {a.id: a for a in artifacts}
        self.folder.mkdir(parents=True, exist_ok=True)
        inputs = self.folder / "inputs.npz"
        np.savez(inputs, **{self.loaded.recipe.model.input.name: self.data.test.x})
        jobs = [(artifact, runtime, target_name, target) for artifact in artifacts for runtime in self.runtimes
                if artifact.format in runtime.formats for target_name, target in self.targets]
        # Each device is checked once (host key, login, GPU) before anything is measured.
        for _, target in self.targets:
            if hasattr(target, "prepare"):
                target.prepare()
        # Different devices are measured in parallel; one device's measurements one after another
        # (local and cuda share a host: a GPU run perturbs the CPU's timings). Results keep the
        # order artifact, runtime, target whatever finishes first.
        hosts = list(dict.fromkeys(getattr(target, "host", target_name) for target_name, target in self.targets))
        results: list[list[Measurement]] = [[] for _ in jobs]

        def run_host(host: str) -> None:
            for index, (artifact, runtime, target_name, target) in enumerate(jobs):
                if getattr(target, "host", target_name) == host:
                    results[index] = self._measure(artifact, runtime, target_name, target, inputs)

        if len(hosts) == 1:
            run_host(hosts[0])
        else:
            for artifact in artifacts:  # torch references computed once, before the threads start
                source = self._torch_source(artifact)
                if source is not None and source.id in self.torch_models and source.id not in self._parent_outputs:
                    self._parent_outputs[source.id] = reference_outputs(self.torch_models[source.id],
                                                                        self.data.test.x)
            with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="verify") as pool:
                for future in [pool.submit(run_host, host) for host in hosts]:
                    future.result()
        return [m for measured in results for m in measured]

    def _measure(self, artifact: Artifact, runtime: Any, target_name: str, target: Any,
                 inputs: Path) -> list[Measurement]:
        latency = self.config.latency
        results: list[Measurement] = []
        scores: dict[str, float] = {}
        agreement: float | None = None
        checked: Parity | None = None
        for position, threads in enumerate(latency.threads):
            outputs = self.folder / f"{artifact.name}.{runtime.name}.{target_slug(target_name)}.npz"
            request = {
                "protocol": 1, "model": str(artifact.path), "runtime": runtime.name, "device": "cpu",
                "threads": threads, "inputs": str(inputs), "batch_size": self.loaded.recipe.data.batch_size,
                "outputs": str(outputs) if position == 0 else None,
                "latency": {"warmup": latency.warmup, "min_runs": latency.min_runs,
                            "min_seconds": latency.min_seconds, "batch_size": latency.batch_size,
                            "trials": latency.trials,
                            "max_seconds": max(10 * latency.min_seconds, 60.0)},
            }
            if artifact.info.get("channels_last"):
                rank = self.data.test.x.ndim
                request["input_transpose"] = [0, *range(2, rank), 1]
            self.console.log(f"verify [bold]{artifact.name}[/] on {runtime.name} ({target_name}, {threads} thread"
                             f"{'s' if threads > 1 else ''})")
            response = target.measure(request, self.config.timeout_s)
            if response.get("ok") and position == 0 and outputs.is_file():  # adb's benchmark_model keeps none
                with np.load(outputs, allow_pickle=False) as archive:
                    logits = archive["output_0"]
                if self.data.test.y is not None or not needs_labels(self.metric_name):
                    scores[self.metric_name] = float(self.metric(logits, self.data.test.y, reference=self.reference))
                agreement = tasks.agreement(self.kind, logits, self.reference)
                checked = self._parity(artifact, logits)
            status = response.get("status", "ok" if response.get("ok") else "failed")
            results.append(Measurement(
                artifact=artifact.name, runtime=runtime.name, target=target_name, threads=threads,
                status=status, error=response.get("error"), metric=dict(scores), agreement=agreement,
                latency=LatencyStats(**response["latency"]) if response.get("latency") else None,
                parity=checked,
                runtime_version=(response.get("runtime") or {}).get("version"),
                device=response.get("device") or {}))
        return results
