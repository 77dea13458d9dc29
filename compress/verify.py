"""Verify every artifact on every runtime that loads its format, on every target.

Each measurement is the device agent in its own process: it keeps the outputs of the test split
(so accuracy comes from the very process that was timed) and times batch-`latency.batch_size`
calls after a warm-up. Agreement is against the original torch model's predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress import tasks
from compress.console import activity, advance, grow
from compress.measure import agent_request, latency_plan
from compress.results import Measurement, Parity
from compress.targets import prepare as prepare_target
from compress.targets import slug as target_slug

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from compress.artifact import Artifact
    from compress.contracts import Target
    from compress.data import Splits
    from compress.plan import Plan
    from compress.recipe import ParityThresholds
    from compress.runtimes.protocol import Request, Response


def parity(outputs: np.ndarray, reference: np.ndarray, reference_name: str,
           thresholds: ParityThresholds, kind: str = "classification") -> Parity:
    """Max abs error, mean per-sample cosine and agreement (top-1, or cosine for an embedding
    model); each judged by its threshold. Outputs that are not finite, or the same for every sample
    while the reference's vary, fail whatever the figures say."""
    def not_compared(reason: str) -> Parity:
        return Parity(reference=reference_name, max_abs_error=float("nan"), cosine=0.0, agreement=0.0,
                      thresholds=thresholds.model_dump(), passed=False, failures=[reason])

    if outputs.shape != reference.shape:
        return not_compared(f"outputs have shape {outputs.shape}, the reference {reference.shape}")
    if outputs.size == 0:  # no samples, or empty output vectors: nothing was compared, never a pass
        return not_compared("no outputs to compare")
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    max_abs = float(np.abs(a - b).max())
    cosine = tasks.mean_cosine(a, b)
    agree = tasks.agreement(kind, outputs, reference)
    failures = []
    broken = tasks.non_finite_samples(outputs)
    if broken:
        failures.append(f"outputs are not finite ({broken} of {len(outputs)} samples)")
    if tasks.non_finite_samples(reference):
        failures.append(f"the reference {reference_name}'s outputs are not finite")
    if tasks.is_dead(outputs, reference):
        failures.append("outputs are the same for every sample while the reference's vary (a dead model)")
    if thresholds.max_abs_error is not None and not max_abs <= thresholds.max_abs_error:
        failures.append(f"max abs error {max_abs:.3g} > {thresholds.max_abs_error:g}")
    if not cosine >= thresholds.min_cosine:
        failures.append(f"cosine {cosine:.5f} < {thresholds.min_cosine:g}")
    if not agree >= thresholds.min_agreement:
        failures.append(f"top-1 agreement {agree:.4f} < {thresholds.min_agreement:g}")
    return Parity(reference=reference_name, max_abs_error=max_abs, cosine=cosine, agreement=agree,
                  thresholds=thresholds.model_dump(), passed=not failures, failures=failures)


def reference_outputs(model: torch.nn.Module, x: np.ndarray | dict[str, np.ndarray],
                      batch_size: int = 256) -> np.ndarray:
    """The torch model's outputs on samples of one input (an array) or several (arrays by name, in
    the model's order), batch by batch."""
    import torch

    from compress.data import Split

    split = Split(x)
    with torch.inference_mode():
        return np.concatenate([model(*split.take(slice(i, i + batch_size)).tensors()).numpy()
                               for i in range(0, len(split), batch_size)])


class Verifier:
    def __init__(self, plan: Plan, data: Splits, original: torch.nn.Module, folder: Path, console: Console,
                 torch_models: dict[str, torch.nn.Module] | None = None,
                 measure: Callable[[Target, Request, float], Response] | None = None) -> None:
        self.plan = plan
        # who measures on a target: the target itself, or a sweep's queue that measures one at a time
        self.measure_on = measure or (lambda target, request, timeout_s: target.measure(request, timeout_s))
        self.config = plan.recipe.verify
        self.data = data
        self.folder = folder
        self.console = console
        self.reference = reference_outputs(original, data.test.inputs)
        self.torch_models = torch_models or {}
        self._parent_outputs: dict[str, np.ndarray] = {}
        self.metric_name = plan.recipe.task.metric
        self.kind = plan.recipe.task.kind
        self.metric = plan.metric
        self.targets: list[Target] = plan.targets

    def _torch_source(self, artifact: Artifact) -> Artifact | None:
        """The torch artifact this one was made from (itself, for a torch artifact)."""
        current: Artifact | None = artifact
        while current is not None and current.id not in self.torch_models:
            current = self._by_id.get(current.parent or "")
        return current

    def _reference_of(self, source: Artifact) -> np.ndarray:
        if source.id not in self._parent_outputs:
            self._parent_outputs[source.id] = reference_outputs(self.torch_models[source.id], self.data.test.inputs)
        return self._parent_outputs[source.id]

    def _parity(self, artifact: Artifact, outputs: np.ndarray) -> Parity | None:
        source = self._torch_source(artifact)
        if source is None:
            return None
        # a mixed artifact is held to the int8 thresholds: it is the int8 the recipe asked for
        thresholds = self.config.parity.get(artifact.precision) or self.config.parity["int8"]  # type: ignore
        return parity(outputs, self._reference_of(source), source.name, thresholds, self.kind)

    def verify(self, artifacts: list[Artifact]) -> list[Measurement]:
        self._by_id = {a.id: a for a in artifacts}
        self.folder.mkdir(parents=True, exist_ok=True)
        inputs = self.folder / "inputs.npz"
        np.savez(inputs, **self.data.test.inputs)  # every input by name, in the model's order
        jobs = [(artifact, runtime, target) for artifact in artifacts
                for runtime in self.plan.runtimes_for(artifact.format) for target in self.targets]
        grow(self.console, len(jobs) * len(self.config.latency.threads))
        # Each device is checked once (host key, login, GPU) before anything is measured.
        for index, target in enumerate(self.targets):
            prepare_target(target, file=self.plan.file, field=f"verify.targets[{index}]")
        # Different devices are measured in parallel; one device's measurements one after another
        # (local and cuda share a host: a GPU run perturbs the CPU's timings). Results keep the
        # order artifact, runtime, target whatever finishes first.
        hosts = list(dict.fromkeys(target.host for target in self.targets))
        results: list[list[Measurement]] = [[] for _ in jobs]

        def run_host(host: str) -> None:
            for index, (artifact, runtime, target) in enumerate(jobs):
                if target.host == host:
                    results[index] = self._measure(artifact, runtime, target, inputs)

        if len(hosts) == 1:
            run_host(hosts[0])
        else:
            for artifact in artifacts:  # torch references computed once, before the threads start
                source = self._torch_source(artifact)
                if source is not None:
                    self._reference_of(source)
            with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="verify") as pool:
                for future in [pool.submit(run_host, host) for host in hosts]:
                    future.result()
        return [m for measured in results for m in measured]

    def _measure(self, artifact: Artifact, runtime: str, target: Target, inputs: Path) -> list[Measurement]:
        latency = self.config.latency
        results: list[Measurement] = []
        scores: dict[str, float] = {}
        agreement: float | None = None
        checked: Parity | None = None
        plan = latency_plan(warmup=latency.warmup, min_runs=latency.min_runs, min_seconds=latency.min_seconds,
                            batch_size=latency.batch_size, trials=latency.trials)
        for position, threads in enumerate(latency.threads):
            outputs = self.folder / f"{artifact.name}.{runtime}.{target_slug(target.name)}.npz"
            request = agent_request(artifact.path, runtime, threads=threads, latency=plan, inputs=inputs,
                                    outputs=outputs if position == 0 else None,
                                    batch_size=self.plan.recipe.data.batch_size,
                                    input_transpose=artifact.attributes.get("input_transpose"))
            activity(self.console, f"verify [bold]{artifact.name}[/] on {runtime} ({target.name}, {threads} thread"
                                   f"{'s' if threads > 1 else ''})")
            response = self.measure_on(target, request, self.config.timeout_s)
            advance(self.console)
            if response.ok and position == 0 and outputs.is_file():  # adb's benchmark_model keeps none
                with np.load(outputs, allow_pickle=False) as archive:
                    logits = archive["output_0"]
                if self.data.test.y is not None or not self.metric.needs_labels:
                    scores[self.metric_name] = float(self.metric(logits, self.data.test.y, reference=self.reference))
                agreement = tasks.agreement(self.kind, logits, self.reference)
                checked = self._parity(artifact, logits)
            results.append(Measurement(
                artifact=artifact.name, runtime=runtime, target=target.name, threads=threads,
                status=response.status, error=response.error, metric=dict(scores), agreement=agreement,
                latency=response.latency,
                parity=checked, runtime_version=response.runtime.version if response.runtime else None,
                device=response.device))
        return results
