"""torch eager: compress's torch artifact folders (the reference for every other format) and
.pt2 programs, on the CPU or a CUDA GPU.

A torch artifact folder is the model's factory (`module:attr` and its kwargs), its module
structure as plain JSON (channel counts, head counts: what pruning changed) and its weights as
safetensors, so a pruned model reloads exactly without pickle. This module writes and reads that
layout; it needs torch and safetensors only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

WEIGHTS, META, PROGRAM, SCRIPT = "model.safetensors", "model.json", "model.pt2", "model.torchscript.pt"
_SIMPLE = (int, float, bool, str, type(None))


@contextlib.contextmanager
def _import_path(folder: Path | None) -> Any:
    """Import from `folder` first, and never from the caller's working directory."""
    saved = sys.path[:]
    cwd = os.getcwd()
    keep = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    sys.path[:] = ([str(folder.resolve())] if folder is not None else []) + keep
    try:
        yield
    finally:
        sys.path[:] = saved


def import_object(spec: str, folder: Path | None) -> Any:
    """`package.module:attr.sub` -> the object, imported from `folder` or an installed package.
    Raises ImportError (the module) or AttributeError (the attribute)."""
    module_name, _, attr_path = spec.partition(":")
    with _import_path(folder):
        target: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        target = getattr(target, part)
    return target


def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def module_structure(model: Any) -> dict[str, dict[str, Any]]:
    """Each module's plain attributes (channel counts, kernel sizes, head counts, ...)."""
    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and _simple(v)}
        if attrs:
            structure[name] = attrs
    return structure


def apply_structure(model: Any, structure: dict[str, dict[str, Any]], shapes: dict[str, list[int]]) -> None:
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


def fit_state(model: Any, state: dict[str, Any]) -> str | None:
    """Why `state` does not fit `model` (the first difference), or None when it does."""
    own = model.state_dict()
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        key = wrong[0]
        return "%s has shape %s, the model expects %s" % (key, tuple(state[key].shape), tuple(own[key].shape))
    missing = [k for k in own if k not in state]
    if missing:
        return "missing %s" % missing[0] + (" and %d more" % (len(missing) - 1) if len(missing) > 1 else "")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        return "unexpected %s" % unexpected[0] + (" and %d more" % (len(unexpected) - 1) if len(unexpected) > 1 else "")
    return None


def eval_mode(model: Any) -> Any:
    try:
        return model.eval()
    except NotImplementedError:  # a torch.export program's module has no train/eval switch
        return model


def save_artifact(model: Any, folder: Path, *, factory: str | None, kwargs: dict[str, Any], source_folder: Path,
                  example: tuple[Any, ...]) -> Path:
    """Write model.json + model.safetensors (factory models), or model.pt2 / TorchScript (models
    given as a trusted file, which have no factory to rebuild them from)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if factory is None and isinstance(model, torch.jit.ScriptModule):
        torch.jit.save(model, str(folder / SCRIPT))
        meta: dict[str, Any] = {"kind": "torchscript"}
    elif factory is None:
        torch.export.save(torch.export.export(eval_mode(model), tuple(example)), str(folder / PROGRAM))
        meta = {"kind": "program"}
    else:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        meta = {"kind": "factory", "factory": factory, "kwargs": kwargs, "source_folder": str(source_folder.resolve()),
                "structure": module_structure(model), "shapes": {k: list(v.shape) for k, v in state.items()}}
    (folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return folder


def load_artifact(folder: Path) -> Any:
    """Reload a torch artifact written by save_artifact. Programs and TorchScript inside one were
    written from a model its recipe trusted."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((folder / META).read_text())
    if meta["kind"] == "program":
        return torch.export.load(str(folder / PROGRAM)).module()
    if meta["kind"] == "torchscript":
        return torch.jit.load(str(folder / SCRIPT), map_location="cpu")
    try:
        factory = import_object(meta["factory"], Path(meta["source_folder"]))
    except (ImportError, AttributeError) as exc:
        raise ImportError("this torch artifact is rebuilt by %s, which cannot be imported here (python %s at %s): "
                          "%s; install the package that provides it (a .pt2 program needs only torch)"
                          % (meta["factory"], sys.version.split()[0], sys.executable, exc)) from None
    model = factory(**meta["kwargs"])
    apply_structure(model, meta["structure"], meta["shapes"])
    state = load_file(str(folder / WEIGHTS))
    problem = fit_state(model, state)
    if problem:
        raise ValueError("%s does not fit %s: %s" % (WEIGHTS, meta["factory"], problem))
    model.load_state_dict(state, strict=True)
    return model.eval()


def outputs_of(value: Any) -> list[Any]:
    """A model's outputs as a list of tensors: a tensor, a tuple or list, a dict, or a ModelOutput."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):  # includes transformers' ModelOutput
        return [v for v in value.values() if isinstance(v, torch.Tensor)]
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in outputs_of(item)]
    return []


class TorchBackend:
    """A torch artifact folder of compress, or a .pt2 program (which the caller chose to trust)."""

    name = "torch"
    requires = ("torch",)
    distributions = ("torch",)
    install_hint = "pip install torch safetensors"

    def __init__(self, model: str, threads: int, device: Any) -> None:
        import torch

        torch.set_num_threads(threads)
        if device.kind not in ("cpu", "cuda"):
            raise ValueError("device %r is not one of cpu, cuda[:N]" % device.text)
        if device.kind == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("torch %s here has no CUDA device (torch.cuda.is_available() is False)"
                                   % torch.__version__)
            if device.index >= torch.cuda.device_count():
                raise RuntimeError("torch sees %d CUDA device(s); %s does not exist"
                                   % (torch.cuda.device_count(), device.text))
        self.device = torch.device("cuda:%d" % device.index if device.kind == "cuda" else "cpu")
        self.torch = torch
        self.specs: list[tuple[str, list[int | None], str]] = []
        if model.endswith(".pt2"):
            program = torch.export.load(model)
            self.model = program.module()
            for index, value in enumerate(program.example_inputs[0] if program.example_inputs else ()):
                self.specs.append(("input_%d" % index, list(value.shape), str(value.dtype).replace("torch.", "")))
        else:
            self.model = load_artifact(Path(model))
        self.model = self.model.to(self.device)
        self.input_names = None
        self.version = torch.__version__

    def input_specs(self) -> list[tuple[str, list[int | None], str]]:
        return self.specs

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        with self.torch.inference_mode():
            out = self.model(*[self.torch.from_numpy(v).to(self.device) for v in feeds.values()])
        return [o.cpu().numpy() for o in outputs_of(out)]

    def timed_call(self, feeds: dict[str, Any]) -> Any:
        tensors = [self.torch.from_numpy(v).to(self.device) for v in feeds.values()]
        synchronize = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def call() -> None:  # on a GPU, until the results are there (kernels run asynchronously)
            with self.torch.inference_mode():
                self.model(*tensors)
            synchronize()

        return call
