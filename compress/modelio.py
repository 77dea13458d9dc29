"""Models in and out, safely.

In: a factory `module:attr` (from the recipe's folder or an installed package) with optional
weights (.safetensors, or a state_dict read with `weights_only=True`); or a whole-model file, which
runs code when loaded and so is refused unless the recipe says `trust: true`.

Out: a torch artifact is the factory reference, the module structure (plain JSON) and the weights
(safetensors). Pruned models reload exactly, without pickle.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import torch

    from compress.recipe import LoadedRecipe, ModelConfig

TORCH_WEIGHTS = "model.safetensors"
TORCH_META = "model.json"
TORCH_PROGRAM = "model.pt2"
TORCH_SCRIPT = "model.torchscript.pt"
_SIMPLE = (int, float, bool, str, type(None))


@contextlib.contextmanager
def _import_path(folder: Path) -> Iterator[None]:
    """Import from `folder` first, and never from the caller's working directory."""
    saved = sys.path[:]
    cwd = os.getcwd()
    keep = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    sys.path[:] = [str(folder.resolve()), *keep]
    try:
        yield
    finally:
        sys.path[:] = saved


def resolve_object(spec: str, folder: Path, *, file: str | None = None, field: str | None = None) -> Any:
    """`package.module:attr.sub` -> the object, looked up from `folder` or installed packages."""
    module_name, _, attr_path = spec.partition(":")
    with _import_path(folder):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise InputError(f"cannot import {module_name!r} ({exc}); it must sit beside the recipe "
                             "or be an installed package", file=file, field=field) from None
        except Exception as exc:
            raise InputError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
                             file=file, field=field) from None
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise InputError(f"{module_name!r} has no attribute {attr_path!r}", file=file, field=field)
        target = getattr(target, part)
    return target


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
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        if wrong:
            key = wrong[0]
            detail = f"{key} has shape {tuple(state[key].shape)}, the model expects {tuple(own[key].shape)}"
        elif missing:
            detail = f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        else:
            detail = f"unexpected {unexpected[0]}" + (
                f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
        raise InputError(f"{name} does not fit the model: {detail}", file=file, field=field)
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


def build_from_factory(factory: str, kwargs: dict[str, Any], folder: Path, *, file: str | None,
                       field: str) -> torch.nn.Module:
    import torch

    make = resolve_object(factory, folder, file=file, field=field)
    if not callable(make):
        raise InputError(f"{factory} is not callable", file=file, field=field)
    try:
        model = make(**kwargs)
    except Exception as exc:
        raise InputError(f"{factory}(**kwargs) failed: {type(exc).__name__}: {exc}", file=file, field=field) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{factory} returned {type(model).__name__}, not a torch.nn.Module", file=file, field=field)
    return model


def build_model(config: ModelConfig, loaded: LoadedRecipe, prefix: str = "model") -> torch.nn.Module:
    """The user's model, in eval mode, from a factory (+ weights) or a trusted whole-model file."""
    file = str(loaded.path)
    if config.file is not None:
        model = load_trusted_file(loaded.resolve_path(config.file), file=file, field=f"{prefix}.file",
                                  trust=config.trust)
    else:
        assert config.factory is not None
        model = build_from_factory(config.factory, config.kwargs, loaded.folder, file=file,
                                   field=f"{prefix}.factory")
        if config.weights is not None:
            path = loaded.resolve_path(config.weights)
            state = load_state_dict_file(path, file=file, field=f"{prefix}.weights")
            _load_into(model, state, file=file, field=f"{prefix}.weights", name=path.name)
    return _eval_mode(model)


def _eval_mode(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return model.eval()
    except NotImplementedError:  # a torch.export program's module has no train/eval switch
        return model


# --- torch artifacts: structure as JSON, weights as safetensors ---------------------------------

def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def module_structure(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Each module's plain attributes (channel counts, kernel sizes, head counts, ...)."""
    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and _simple(v)}
        if attrs:
            structure[name] = attrs
    return structure


def apply_structure(model: torch.nn.Module, structure: dict[str, dict[str, Any]],
                    shapes: dict[str, list[int]]) -> None:
    """Reshape a freshly built model into a saved (e.g. pruned) structure before loading weights."""
    import torch

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        module = modules.get(name)
        if module is None:
            continue
        for key, value in attrs.items():
            current = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value)
    for full_name, shape in shapes.items():
        owner_name, _, leaf = full_name.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            old = owner._parameters[leaf]
            if list(old.shape) != shape:
                owner._parameters[leaf] = torch.nn.Parameter(torch.empty(shape, dtype=old.dtype),
                                                             requires_grad=old.requires_grad)
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            old = owner._buffers[leaf]
            if list(old.shape) != shape:
                owner._buffers[leaf] = torch.empty(shape, dtype=old.dtype)


def save_torch_artifact(model: torch.nn.Module, folder: Path, *, factory: str | None,
                        kwargs: dict[str, Any], source_folder: Path, example: torch.Tensor) -> Path:
    """Write model.json + model.safetensors (factory models) or model.pt2 (trusted file models)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if factory is None and isinstance(model, torch.jit.ScriptModule):
        torch.jit.save(model, str(folder / TORCH_SCRIPT))
        meta: dict[str, Any] = {"kind": "torchscript"}
    elif factory is None:
        program = torch.export.export(_eval_mode(model), (example,))
        torch.export.save(program, str(folder / TORCH_PROGRAM))
        meta = {"kind": "program"}
    else:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(folder / TORCH_WEIGHTS))
        meta = {
            "kind": "factory",
            "factory": factory,
            "kwargs": kwargs,
            "source_folder": str(source_folder.resolve()),
            "structure": module_structure(model),
            "shapes": {k: list(v.shape) for k, v in state.items()},
        }
    (folder / TORCH_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return folder


def load_torch_artifact(folder: Path) -> torch.nn.Module:
    """Reload a torch artifact written by save_torch_artifact (our own files)."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((folder / TORCH_META).read_text())
    # Programs and TorchScript in our own artifacts were written by save_torch_artifact from a
    # model the recipe trusted.
    if meta["kind"] == "program":
        return torch.export.load(str(folder / TORCH_PROGRAM)).module()
    if meta["kind"] == "torchscript":
        return torch.jit.load(str(folder / TORCH_SCRIPT), map_location="cpu")
    model = build_from_factory(meta["factory"], meta["kwargs"], Path(meta["source_folder"]),
                               file=str(folder / TORCH_META), field="factory")
    apply_structure(model, meta["structure"], meta["shapes"])
    _load_into(model, load_file(str(folder / TORCH_WEIGHTS)), file=str(folder), field="weights",
               name=TORCH_WEIGHTS)
    return model.eval()
