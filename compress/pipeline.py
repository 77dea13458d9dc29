"""The pipeline: recipe -> original model -> torch stages -> exports -> int8 -> verify -> results.

Every model along the way is an Artifact in the cache, keyed by a hash of its parent, the step and
the step's config; `--resume` reuses what is there. The run folder is assembled under a hidden name
and renamed when complete, so a failed run never leaves a folder that looks finished.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress import __version__, registry
from compress.artifact import Artifact, sha256_of, size_of, stable_hash
from compress.cache import ArtifactCache
from compress.errors import CompressError, InputError, StageError
from compress.quantize.leftovers import left_in_float
from compress.stage import StageContext
from exporters import ExportRefused, unsupported_op

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from compress.data import Splits
    from compress.recipe import LoadedRecipe
    from compress.results import Results

LIBRARIES = ("edge-compress", "torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf",
             "litert-torch", "ai-edge-litert", "torchao", "numpy", "scikit-learn", "safetensors", "pydantic",
             "pyyaml", "click", "rich")


@dataclass
class RunOptions:
    out: Path = Path("runs")
    resume: bool = False
    run_id: str | None = None


@dataclass
class RunOutcome:
    folder: Path
    results: Results
    table: str


@dataclass
class _Produced:
    artifact: Artifact
    cached: bool
    seconds: float
    step: str
    torch_model: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def _factory_source_hash(factory: str | None, folder: Path) -> str | None:
    """Hash the factory's source file, so editing the model invalidates the cache."""
    if factory is None:
        return None
    from compress.modelio import resolve_object

    try:
        source = inspect.getsourcefile(resolve_object(factory, folder))
    except (TypeError, CompressError):
        return None
    return sha256_of(Path(source)) if source else None


class Pipeline:
    def __init__(self, loaded: LoadedRecipe, options: RunOptions, console: Console) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.options = options
        self.console = console
        self.file = str(loaded.path)
        self.cache = ArtifactCache(options.out / self.recipe.name / "cache")
        self.log = logging.getLogger("compress.run")
        self.refusals: list[dict[str, Any]] = []
        self._calibration_reference: Any = None  # the original model's outputs on the calibration split

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        run_id = self.options.run_id or _new_run_id()
        parent = self.options.out / self.recipe.name
        staging = parent / f".{run_id}.partial"
        staging.mkdir(parents=True, exist_ok=False)
        handler = logging.FileHandler(staging / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger("compress")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            outcome = self._run(run_id, staging)
            final = parent / run_id
            os.replace(staging, final)
            outcome.folder = final
            return outcome
        except BaseException as exc:
            self.log.error("run failed: %s", exc)
            failed = parent / f"{run_id}.failed"
            shutil.rmtree(staging / "artifacts", ignore_errors=True)  # nothing half-written survives
            os.replace(staging, failed)
            raise
        finally:
            root.removeHandler(handler)
            handler.close()

    def _run(self, run_id: str, folder: Path) -> RunOutcome:
        import yaml

        from compress.data import load_data
        from compress.results import Results

        started = datetime.now(UTC).isoformat(timespec="seconds")
        (folder / "recipe.resolved.yaml").write_text(
            yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False))
        versions = library_versions()
        (folder / "versions.json").write_text(json.dumps(versions, indent=1))
        self.log.info("run %s of %s", run_id, self.file)

        data = load_data(self.loaded)
        self.log.info("data %s: %d train, %d calibration, %d test", data.source, len(data.train),
                      len(data.calibration), len(data.test))
        original = self._original(data)
        self._original_model = original.torch_model
        ctx = StageContext(recipe=self.loaded, data=data, original=original.torch_model,
                           console=self.console, log=self.log, seed=self.recipe.seed)
        produced = [original]
        current = original
        for index, spec in enumerate(self.loaded.stages):
            current = self._stage(index, spec.name, spec.config, current, ctx)
            produced.append(current)
        torch_artifacts = [p.artifact for p in produced]
        exports = self._exports(original, current)
        quantized = self._quantize([e for e in exports if e.artifact.parent == current.artifact.id], data)
        artifacts = torch_artifacts + [p.artifact for p in exports + quantized]

        from compress.verify import Verifier

        torch_models = {p.artifact.id: p.torch_model for p in produced if p.torch_model is not None}
        verifier = Verifier(self.loaded, data, original.torch_model, folder / "verify", self.console, torch_models)
        measurements = verifier.verify(artifacts)
        records = self._artifact_records(artifacts, folder)
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        complete = all(m.status in ("ok", "skipped") for m in measurements)
        results = Results(
            compress_version=__version__, run_id=run_id, recipe=str(self.loaded.path.resolve()),
            recipe_name=self.recipe.name, started=started, finished=finished,
            status="complete" if complete else "incomplete",
            task=self.recipe.task.model_dump(),
            data={"source": data.source, "train": len(data.train), "calibration": len(data.calibration),
                  "test": len(data.test), "fingerprint": data.fingerprint()},
            stages=[{"name": p.step, "artifact": p.artifact.name, "cached": p.cached,
                     "seconds": round(p.seconds, 3), "info": p.info} for p in produced + exports + quantized],
            artifacts=records, measurements=measurements, refusals=self.refusals, versions=versions)
        from compress.report import render_table, summarize

        results.summary = summarize(results)
        if self.recipe.gates is not None:
            from compress.gates import evaluate

            results.summary["gates"] = [c.as_dict() for c in evaluate(results, self.recipe.gates)]
        table = render_table(results)
        _write_atomic(folder / "results.json", results.model_dump_json(indent=1))
        _write_atomic(folder / "table.txt", table)
        return RunOutcome(folder=folder, results=results, table=table)

    # --- steps -------------------------------------------------------------------------------

    def _original(self, data: Splits) -> _Produced:
        """The user's model, trained first when the recipe asks and no weights are given."""
        from compress.modelio import build_model, load_torch_artifact

        config = self.recipe.model
        weights_hash = None
        if config.weights is not None:
            path = self.loaded.resolve_path(config.weights)
            if not path.is_file():
                raise InputError(f"weights file not found: {path}", file=self.file, field="model.weights")
            weights_hash = sha256_of(path)
        trains = config.weights is None and config.train is not None and config.file is None
        artifact_id = stable_hash(
            "original", config.model_dump(mode="json"), weights_hash,
            _factory_source_hash(config.factory, self.loaded.folder),
            data.fingerprint() if trains else None, self.recipe.seed)
        cached = self.cache.lookup(artifact_id) if self.options.resume else None
        if cached is not None:
            self.log.info("original: reused %s", artifact_id)
            return _Produced(cached, True, 0.0, "original", load_torch_artifact(cached.path), dict(cached.info))

        started = time.perf_counter()
        from compress.tasks import training_loss
        from compress.train import fit, freeze_parameters, seed_everything

        seed_everything(self.recipe.seed)  # before building: the same initial weights every run
        model = build_model(config, self.loaded)
        info: dict[str, Any] = {}
        if trains:
            assert config.train is not None
            frozen = freeze_parameters(model, config.train.freeze, file=self.file, field="model.train.freeze")
            info["train_epoch_losses"] = [round(v, 5) for v in fit(
                model, data.train, epochs=config.train.epochs, lr=config.train.lr,
                batch_size=config.train.batch_size, seed=self.recipe.seed, loss_fn=training_loss(self.recipe.task.kind),
                console=self.console, description="train original")]
            freeze_parameters(model, [])
            if frozen:
                info["train_frozen_parameters"] = len(frozen)
        elif config.weights is None and config.file is None:
            self.log.warning("model has no weights and no train section: using its initial parameters")
        self._check_forward(model, data)
        artifact = self._store_torch(artifact_id, "original", model, ("original",), None, info)
        return _Produced(artifact, False, time.perf_counter() - started, "original", model, info)

    def _check_forward(self, model: torch.nn.Module, data: Splits) -> None:
        import torch

        sample = torch.from_numpy(data.test.x[:2])
        try:
            with torch.no_grad():
                model(sample)
        except Exception as exc:
            raise InputError(f"the model fails on a batch of shape {tuple(sample.shape)}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                             file=self.file, field="model.input") from None

    def _store_torch(self, artifact_id: str, name: str, model: torch.nn.Module, lineage: tuple[str, ...],
                     parent: str | None, info: dict[str, Any]) -> Artifact:
        from compress.modelio import save_torch_artifact

        config = self.recipe.model
        example = self._example()
        info = {**info, **self._torch_counts(model)}

        def build(folder: Path) -> Artifact:
            target = folder / "model"
            save_torch_artifact(model, target, factory=config.factory, kwargs=config.kwargs,
                                source_folder=self.loaded.folder, example=example)
            return Artifact(id=artifact_id, name=name, format="torch", precision="fp32", path=target,
                            sha256=sha256_of(target), lineage=lineage, parent=parent, info=info)

        return self.cache.store(artifact_id, build)

    def _example(self, batch: int = 1) -> torch.Tensor:
        import torch

        spec = self.recipe.model.input
        return torch.zeros((batch, *spec.sample_shape), dtype=getattr(torch, spec.dtype))

    def _torch_counts(self, model: torch.nn.Module) -> dict[str, int]:
        params = sum(p.numel() for p in model.parameters())
        try:
            import torch_pruning as tp

            macs, _ = tp.utils.count_ops_and_params(model, self._example())
            return {"params": int(params), "macs": int(macs)}
        except Exception:  # MACs are informative; a model torch-pruning cannot trace still runs
            return {"params": int(params)}

    def _stage(self, index: int, name: str, config: Any, parent: _Produced, ctx: StageContext) -> _Produced:
        from compress.modelio import load_torch_artifact

        artifact_id = stable_hash(parent.artifact.id, name, config.model_dump(mode="json"))
        label = name if sum(s.name == name for s in self.loaded.stages) == 1 else f"{name}-{index}"
        cached = self.cache.lookup(artifact_id) if self.options.resume else None
        if cached is not None:
            self.log.info("stage %s: reused %s", label, artifact_id)
            self.console.log(f"stage [bold]{label}[/]: unchanged, reused from cache")
            return _Produced(cached, True, 0.0, label, load_torch_artifact(cached.path), dict(cached.info))
        stage = registry.load("compress.stages", name, file=self.file, field=f"stages[{index}]")(config)
        self.console.log(f"stage [bold]{label}[/]")
        started = time.perf_counter()
        try:
            result = stage.run(copy.deepcopy(parent.torch_model), ctx)
        except CompressError as exc:
            if exc.field and exc.field.startswith("stages["):
                raise
            raise exc.within(f"stages[{index}]") from exc
        except Exception as exc:
            raise StageError(f"stage failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             file=self.file, field=f"stages[{index}].{name}") from exc
        model = result.model.eval()
        seconds = time.perf_counter() - started
        self.log.info("stage %s: %s in %.1fs", label, result.info, seconds)
        artifact = self._store_torch(artifact_id, label, model, (*parent.artifact.lineage, label),
                                     parent.artifact.id, result.info)
        return _Produced(artifact, False, seconds, label, model, result.info)

    def _exports(self, original: _Produced, final: _Produced) -> list[_Produced]:
        """Every export format, of the original model and of the final one."""
        sources = [original] if final is original else [original, final]
        produced: list[_Produced] = []
        for index, spec in enumerate(self.loaded.exports):
            exporter_cls = registry.require("compress.exporters", spec.name, file=self.file, field=f"export[{index}]")
            exporter = exporter_cls(spec.config)
            for source in sources:
                try:
                    produced.append(self._export_one(exporter, spec, source))
                except ExportRefused as exc:
                    self._refuse(source.artifact.name, exporter.format, f"export.{exporter.name}", exc.op, exc)
        return produced

    def _refuse(self, artifact: str, fmt: str, stage: str, op: str | None, exc: CompressError) -> None:
        self.console.log(f"[yellow]refused[/] {fmt} for {artifact} at {stage}: {exc.message}")
        self.log.warning("refused %s for %s at %s: %s", fmt, artifact, stage, exc.message)
        self.refusals.append({"artifact": artifact, "format": fmt, "stage": stage, "op": op, "reason": exc.message})

    def _export_one(self, exporter: Any, spec: Any, source: _Produced) -> _Produced:
        options = spec.config.model_dump(mode="json") if spec.config is not None else {}
        artifact_id = stable_hash(source.artifact.id, "export", exporter.name, options)
        name = f"{source.artifact.name}.{exporter.format}"
        step = f"export.{exporter.name}"
        cached = self.cache.lookup(artifact_id) if self.options.resume else None
        if cached is not None:
            return _Produced(cached, True, 0.0, step, source.torch_model, dict(cached.info))
        self.console.log(f"export [bold]{name}[/]")
        started = time.perf_counter()
        input_name = self.recipe.model.input.name

        def build(folder: Path) -> Artifact:
            path, info = exporter.export(source.torch_model, self._example(2), folder, input_name)
            precision = info.pop("precision", None) or ("fp16" if info.get("weights") == "fp16" else "fp32")
            info = {**info, "macs": source.artifact.info.get("macs"), "params": source.artifact.info.get("params")}
            return Artifact(id=artifact_id, name=name, format=exporter.format, precision=precision, path=path,
                            sha256=sha256_of(path), lineage=(*source.artifact.lineage, step),
                            parent=source.artifact.id, info=info)

        artifact = self.cache.store(artifact_id, build)
        return _Produced(artifact, False, time.perf_counter() - started, step, source.torch_model, dict(artifact.info))

    def _validation(self, fmt: str, data: Splits) -> Any:
        """What accuracy-aware int8 scores candidates with: the calibration split, never the test split."""
        config = self.recipe.quantize
        if config is None or config.max_accuracy_drop is None:
            return None
        from compress.metrics import LOWER_IS_BETTER, needs_labels
        from compress.quantize.accuracy import Budget, Validation
        from compress.verify import reference_outputs

        metric_name = self.recipe.task.metric
        if data.calibration.y is None and needs_labels(metric_name):
            raise InputError("max_accuracy_drop needs labelled calibration data", file=self.file,
                             field="quantize.max_accuracy_drop")
        metric = registry.load("compress.metrics", metric_name, file=self.file, field="task.metric")
        runtime = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}.get(fmt, fmt)
        if not needs_labels(metric_name) and self._calibration_reference is None:  # once for every format
            self._calibration_reference = reference_outputs(self._original_model, data.calibration.x)
        reference = None if needs_labels(metric_name) else self._calibration_reference
        return Validation(x=data.calibration.x, y=data.calibration.y, metric=metric,
                          budget=Budget.parse(config.max_accuracy_drop, metric_name in LOWER_IS_BETTER),
                          input_name=self.recipe.model.input.name, runtime=runtime, reference=reference)

    def _quantize(self, final_exports: list[_Produced], data: Splits) -> list[_Produced]:
        """int8 of the final model in every format it was exported to, each by its own quantizer."""
        config = self.recipe.quantize
        if config is None:
            return []
        produced = []
        for source in final_exports:
            if source.artifact.precision != "fp32":
                continue  # quantize from full precision only
            try:
                produced.append(self._quantize_one(source, data))
            except StageError as exc:
                if exc.field == "quantize.max_accuracy_drop":
                    raise  # a missed budget fails the run, by design
                fmt = source.artifact.format
                self._refuse(source.artifact.name, fmt, f"quantize.{fmt}", unsupported_op(exc.message), exc)
        for index, pattern in enumerate(config.ignore):
            if not any(p.artifact.info.get("ignore_matches", {}).get(pattern) for p in produced):
                raise InputError(f"{pattern!r} matches no layer in any format (ONNX node names, OpenVINO op "
                                 "names, torch module names for TFLite)", file=self.file,
                                 field=f"quantize.ignore[{index}]")
        return produced

    def _quantize_one(self, source: _Produced, data: Splits) -> _Produced:
        config = self.recipe.quantize
        assert config is not None
        fmt = source.artifact.format
        quantizer = registry.require("compress.quantizers", fmt, file=self.file, field="quantize")()
        calibration = data.calibration.x[: config.calibration.samples]
        artifact_id = stable_hash(source.artifact.id, "quantize", quantizer.name, config.model_dump(mode="json"),
                                  data.fingerprint())
        name = source.artifact.name.replace(f".{fmt}", f".{config.precision}.{fmt}")
        step = f"quantize.{fmt}"
        cached = self.cache.lookup(artifact_id) if self.options.resume else None
        if cached is not None:
            _check_budget(cached, name, self.file)
            self._recurrent_left_in_float(cached, step)
            return _Produced(cached, True, 0.0, step, source.torch_model, dict(cached.info))
        self.console.log(f"quantize [bold]{name}[/] ({quantizer.name}, {len(calibration)} calibration samples)")
        started = time.perf_counter()

        validation = self._validation(fmt, data)

        def build(folder: Path) -> Artifact:
            path, info = quantizer.quantize(source.artifact, folder, config, calibration,
                                            input_name=self.recipe.model.input.name,
                                            torch_model=source.torch_model, file=self.file, validation=validation)
            info = {**info, "macs": source.artifact.info.get("macs"), "params": source.artifact.info.get("params"),
                    "left_in_float": left_in_float(fmt, path)}
            return Artifact(id=artifact_id, name=name, format=fmt, precision=config.precision, path=path,
                            sha256=sha256_of(path), lineage=(*source.artifact.lineage, f"quantize.{quantizer.name}"),
                            parent=source.artifact.id, info=info)

        artifact = self.cache.store(artifact_id, build)
        _check_budget(artifact, name, self.file)
        self._recurrent_left_in_float(artifact, step)
        return _Produced(artifact, False, time.perf_counter() - started, step, source.torch_model, dict(artifact.info))

    def _recurrent_left_in_float(self, artifact: Artifact, step: str) -> None:
        """Say so, and record it, when int8 left a recurrent layer in float (quantizers do it silently)."""
        from compress.quantize.leftovers import RECURRENT

        for op, names in (artifact.info.get("left_in_float") or {}).items():
            recurrent = [n for n in names if op in RECURRENT or "torch.nn.modules.rnn." in n]
            if not recurrent:
                continue
            kept = artifact.info.get("nodes_excluded") or []
            how = "kept there by quantize.ignore or the accuracy search" if kept else "its quantizer skips them"
            reason = (f"{len(recurrent)} {op} op(s) of a recurrent layer stay in float in {artifact.name} ({how}): "
                      f"{', '.join(recurrent[:3])}{' ...' if len(recurrent) > 3 else ''}; the rest is int8"
                      + ("" if self.recipe.quantize and self.recipe.quantize.mode == "dynamic"
                         else "; quantize.mode: dynamic quantizes recurrent layers on ONNX Runtime and TFLite"))
            self.console.log(f"[yellow]left in float[/] {artifact.format} at {step}: {reason}")
            self.log.warning("left in float %s at %s: %s", artifact.format, step, reason)
            self.refusals.append({"artifact": artifact.name, "format": artifact.format, "stage": step, "op": op,
                                  "reason": reason})

    def _artifact_records(self, artifacts: list[Artifact], folder: Path) -> list[Any]:
        """Link each artifact into the run folder and describe it."""
        from compress.results import ArtifactRecord

        target_root = folder / "artifacts"
        records = []
        for artifact in artifacts:
            dest = target_root / artifact.name
            _link_tree(artifact.path, dest / artifact.path.name)
            records.append(ArtifactRecord(
                name=artifact.name, id=artifact.id, format=artifact.format, precision=artifact.precision,
                path=str((dest / artifact.path.name).relative_to(folder)), sha256=artifact.sha256,
                size_bytes=size_of(artifact.path), params=artifact.info.get("params"),
                macs=artifact.info.get("macs"), lineage=list(artifact.lineage), parent=artifact.parent,
                info={k: v for k, v in artifact.info.items() if k not in ("params", "macs")}))
        return records


def _check_budget(artifact: Artifact, name: str, file: str) -> None:
    """An int8 artifact that missed its accuracy budget stays in the cache (the best found) and
    fails the stage, saying so."""
    search = artifact.info.get("accuracy_aware")
    if search and not search["budget_met"]:
        from compress.quantize.accuracy import SearchReport, budget_missed

        report = SearchReport(reference=search["validation_metric_fp32"], budget=search["budget"],
                              allowed_drop=search["allowed_drop"], kept_in_float=search["kept_in_float"],
                              score=search["validation_metric_int8"])
        raise budget_missed(report, name, artifact.path, file)


def _link_tree(source: Path, dest: Path) -> None:
    """Hard-link (or copy) a file or folder from the cache into the run folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for item in source.rglob("*"):
            if item.is_file():
                _link_tree(item, dest / item.relative_to(source))
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
