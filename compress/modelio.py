"""Models in and out, safely.

In: a factory `module:attr` (from the recipe's folder or an installed package) with optional
weights (.safetensors, or a state_dict read with `weights_only=True`); or a whole-model file, which
runs code when loaded and so is refused unless the recipe says `trust: true`.

Out: a torch artifact is the factory reference, the module structure (plain JSON) and the weights
(safetensors), written and read by the torch runtime's backend (compress.runtimes.backends.torch),
so the device side reads what the core writes. Pruned models reload exactly, without pickle.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import torch

    from compress.plan import Plan
    from compress.recipe import ModelConfig



def resolve_object(spec: str, folder: Path, *, file: str | None = None, field: str | None = None) -> Any:
    """`package.module:attr.sub` -> the object, looked up from `folder` or installed packages (never
    from the working directory)."""
    from compress.runtimes.backends.torch import import_object

    module_name, _, attr_path = spec.partition(":")
    try:
        return import_object(spec, folder)
    except ModuleNotFoundError as exc:
        raise InputError(f"cannot import {module_name!r} ({exc}); it must sit beside the recipe "
                         "or be an installed package", file=file, field=field) from None
    except AttributeError:
        raise InputError(f"{module_name!r} has no attribute {attr_path!r}", file=file, field=field) from None
    except Exception as exc:
        raise InputError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
                         file=file, field=field) from None


def _archive_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _describe_code_file(path: Path) -> str:
    if path.suffix == ".pt2":
        return "a torch.export program (.pt2)"
    if any("/code/" in name or name.endswith("constants.pkl") for name in _archive_names(path)):
        return "a TorchScript archive"
    return "a pickled Python object"


def load_state_dict_file(path: Path, *, file: str | None, field: str) -> dict[str, torch.Tensor]:
    """Read weights without running code: safetensors, or torch.load(weights_only=True)."""
    import pickle

    import torch

    if not path.is_file():
        raise InputError(f"weights file not found: {path}", file=file, field=field)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"cannot read {path.name} as safetensors: {exc}", file=file, field=field) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        kind = _describe_code_file(path)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path.name} is not a plain state_dict; refused to unpickle it "
                         f"(weights_only=True): {reason}. If it is {kind} you trust, give it as "
                         "model.file with model.trust: true", file=file, field=field) from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(loaded, dict) and set(loaded) == {key} and isinstance(loaded[key], dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(f"{path.name} holds {type(loaded).__name__}, not a state_dict of tensors",
                         file=file, field=field)
    return loaded


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, file: str | None, field: str,
               name: str) -> None:
    from compress.runtimes.backends.torch import fit_state

    problem = fit_state(model, state)
    if problem:
        raise InputError(f"{name} does not fit the model: {problem}", file=file, field=field)
    model.load_state_dict(state, strict=True)


def load_trusted_file(path: Path, *, file: str | None, field: str, trust: bool) -> torch.nn.Module:
    """A whole-model file runs code when loaded: only with the recipe's explicit trust."""
    import torch

    if not path.is_file():
        raise InputError(f"model file not found: {path}", file=file, field=field)
    kind = _describe_code_file(path)
    if not trust:
        raise InputError(f"{path.name} is {kind}; loading it runs code from the file. Set model.trust: "
                         "true only if you trust its source, or give a factory with safetensors weights",
                         file=file, field=field)
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        if kind == "a TorchScript archive":
            return torch.jit.load(str(path), map_location="cpu")
        module = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the recipe
    except Exception as exc:
        raise InputError(f"cannot load {path.name}: {type(exc).__name__}: {exc}", file=file, field=field) from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{path.name} holds {type(module).__name__}, not a torch.nn.Module", file=file, field=field)
    return module


def _in_standard_library(spec: str, target: Any) -> bool:
    import inspect
    import sys
    import sysconfig

    module_name = spec.partition(":")[0]
    if module_name.split(".")[0] in sys.stdlib_module_names:
        return True
    # where the object was defined (a re-export of a standard library function counts as one)
    source = inspect.getmodule(target) if inspect.isfunction(target) or inspect.isclass(target) else None
    origin = getattr(source or sys.modules.get(module_name), "__file__", None)
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return origin is None or (Path(origin).resolve().is_relative_to(stdlib)
                              and "site-packages" not in Path(origin).resolve().parts)


def resolve_factory(spec: str, folder: Path, *, file: str | None, field: str, builds: str = "model") -> Any:
    """A recipe's factory: a class or a Python function of the recipe's folder or an installed package,
    never of Python's standard library (`os:system` is not a model factory). It is imported, not called.
    `builds` is "model" (a class must be a torch.nn.Module) or "data" (a function)."""
    import inspect

    target = resolve_object(spec, folder, file=file, field=field)
    if _in_standard_library(spec, target):
        raise InputError(f"{spec} is part of Python's standard library, not a {builds} factory; refused", file=file,
                         field=field)
    if inspect.isfunction(target):
        return target
    if builds == "model" and inspect.isclass(target):
        import torch

        if issubclass(target, torch.nn.Module):
            return target
        raise InputError(f"{spec} is a class that is not a torch.nn.Module", file=file, field=field)
    kind = "a builtin" if inspect.isbuiltin(target) else f"a {type(target).__name__}"
    wanted = "a torch.nn.Module class or a Python function that returns one" if builds == "model" else \
        "a Python function that returns a dict of arrays"
    raise InputError(f"{spec} is {kind}, not {wanted}" if callable(target) else f"{spec} is not callable",
                     file=file, field=field)


def build_from_factory(factory: str, kwargs: dict[str, Any], folder: Path, *, file: str | None,
                       field: str) -> torch.nn.Module:
    import torch

    make = resolve_factory(factory, folder, file=file, field=field)
    try:
        model = make(**kwargs)
    except Exception as exc:
        raise InputError(f"{factory}(**kwargs) failed: {type(exc).__name__}: {exc}", file=file, field=field) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{factory} returned {type(model).__name__}, not a torch.nn.Module", file=file, field=field)
    return model


ADAPTER = "compress.runtimes.backends.torch_adapter:adapted"


def model_factory(config: ModelConfig, plan: Plan) -> tuple[str | None, dict[str, Any]]:
    """The factory and kwargs a torch artifact of the recipe's model is rebuilt from: the recipe's
    factory, or the adapter around it (or around the Hugging Face loader) for a model with named
    inputs or a chosen output."""
    if config.huggingface is not None:
        folder = _hf_folder(config, plan, "model")
        inner: str | None = "compress.hf:load"
        kwargs: dict[str, Any] = {"path": str(folder), "task": config.huggingface.task,
                                  "num_labels": config.huggingface.num_labels, "seed": plan.recipe.seed}
    else:
        inner, kwargs = config.factory, dict(config.kwargs)
    if inner is None or not config.wrapped:
        return inner, kwargs
    return ADAPTER, {"factory": inner, "kwargs": kwargs, "input_names": [s.name for s in config.input_specs],
                     "output": task_output(config), "source_folder": str(plan.folder.resolve())}


def task_output(config: ModelConfig) -> str | int | None:
    """The output the task reads: the recipe's `model.output`, else the Hugging Face task's."""
    if config.output is not None:
        return config.output
    if config.huggingface is not None:
        from compress.hf import DEFAULT_OUTPUT

        return DEFAULT_OUTPUT[config.huggingface.task]
    return None


def adapt(model: torch.nn.Module, config: ModelConfig) -> torch.nn.Module:
    """The model with the recipe's calling convention (compress.runtimes.backends.torch_adapter)."""
    if not config.wrapped:
        return model
    from compress.runtimes.backends.torch_adapter import Adapted

    return Adapted(model, [s.name for s in config.input_specs], task_output(config))


def build_model(config: ModelConfig, plan: Plan, prefix: str = "model",
                calling: ModelConfig | None = None) -> torch.nn.Module:
    """The user's model, in eval mode, from a factory (+ weights), a Hugging Face folder or a trusted
    whole-model file; called the way `calling` (the recipe's model, by default `config`) says."""
    from compress.runtimes.backends.torch import eval_mode

    file = plan.file
    calling = calling or config
    if getattr(config, "huggingface", None) is not None:
        from compress import hf

        folder = _hf_folder(config, plan, prefix)
        model, _ = hf.build(config.huggingface, folder, seed=plan.recipe.seed, file=file)  # type: ignore[arg-type]
        return eval_mode(adapt(model, calling))
    if config.file is not None:
        model = load_trusted_file(plan.resolve_path(config.file, f"{prefix}.file", "model file"), file=file,
                                  field=f"{prefix}.file", trust=config.trust)
    else:
        assert config.factory is not None
        model = build_from_factory(config.factory, config.kwargs, plan.folder, file=file,
                                   field=f"{prefix}.factory")
        if config.weights is not None:
            path = plan.resolve_path(config.weights, f"{prefix}.weights", "weights file")
            state = load_state_dict_file(path, file=file, field=f"{prefix}.weights")
            _load_into(model, state, file=file, field=f"{prefix}.weights", name=path.name)
    if config.file is None:
        model = adapt(model, calling)
    return eval_mode(model)


def _hf_folder(config: Any, plan: Plan, prefix: str) -> Path:
    """The recipe's Hugging Face folder, resolved once by the plan's data context (path policy)."""
    folder = plan.data_context().model_folder
    assert folder is not None, f"{prefix}.huggingface is set only on the recipe's model"
    return folder


def save_torch_artifact(model: torch.nn.Module, folder: Path, *, factory: str | None, kwargs: dict[str, Any],
                        source_folder: Path, example: tuple[torch.Tensor, ...] | torch.Tensor) -> Path:
    """Write a torch artifact folder (see compress.runtimes.backends.torch)."""
    from compress.runtimes.backends.torch import save_artifact

    example = example if isinstance(example, tuple) else (example,)
    return save_artifact(model, folder, factory=factory, kwargs=kwargs, source_folder=source_folder, example=example)


def load_torch_artifact(folder: Path) -> torch.nn.Module:
    """Reload a torch artifact written by save_torch_artifact (our own files)."""
    from compress.runtimes.backends.torch import load_artifact

    try:
        return load_artifact(folder)
    except (ImportError, ValueError, OSError) as exc:
        raise InputError(f"cannot reload the torch artifact: {exc}", file=str(folder)) from None
