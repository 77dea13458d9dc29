"""Hugging Face transformers models from a local folder (`model.huggingface`), never the hub.

The folder holds config.json, and the weights (safetensors, or a state_dict that transformers reads
with weights_only) and tokenizer files where it has them. A folder without weights builds the
architecture from its config with random weights, seeded: tiny BERT, GPT-2 or ViT configurations
test the flow without a download. Attention is the eager implementation: every exporter traces
it, and head pruning reshapes its projections. `load` is the factory torch artifacts rebuild from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import torch

    from compress.recipe import HuggingFaceConfig

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TASK_CLASSES = {"sequence_classification": "AutoModelForSequenceClassification",
                "image_classification": "AutoModelForImageClassification",
                "causal_lm": "AutoModelForCausalLM", "feature_extraction": "AutoModel"}
DEFAULT_OUTPUT = {"sequence_classification": "logits", "image_classification": "logits", "causal_lm": "logits",
                  "feature_extraction": "last_hidden_state"}


PACKAGE_PREFIX = "package:"


def resolve_folder(value: str, *, folder: Path, allowed: list[Path], file: str, field: str) -> Path:
    """The model's folder: `package:NAME/sub/folder` inside an installed package (trusted as a
    factory's package is), else a path under the recipe's path policy (its folder or an allowed one)."""
    from compress.inputs import input_path

    if value.startswith(PACKAGE_PREFIX):
        import importlib.util

        name, _, rest = value[len(PACKAGE_PREFIX):].partition("/")
        try:
            spec = importlib.util.find_spec(name) if name.isidentifier() else None
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise InputError(f"{value!r}: no installed package {name!r}", file=file, field=field)
        root = Path(next(iter(spec.submodule_search_locations))).resolve()
        inner = (root / rest).resolve()
        if not inner.is_relative_to(root):
            raise InputError(f"{value!r} leads outside the package {name!r}; refused", file=file, field=field)
        return input_path(str(inner), folder=root, allowed=[], file=file, field=field, what="Hugging Face model",
                          kind="folder")
    return input_path(value, folder=folder, allowed=allowed, file=file, field=field, what="Hugging Face model",
                      kind="folder")


def has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def load(path: str, task: str, num_labels: int | None = None, seed: int = 0) -> torch.nn.Module:
    """The model of the folder `path` for `task`, in eval mode (never from the hub, never remote code)."""
    import torch
    import transformers

    quiet_transformers()
    folder = Path(path)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    if num_labels is not None:
        config.num_labels = num_labels
    config.use_cache = False
    auto = getattr(transformers, TASK_CLASSES[task])
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # heads the folder has no weights for (a new classifier) start the same every run
        if has_weights(folder):
            model = auto.from_pretrained(folder, config=config, local_files_only=True, trust_remote_code=False,
                                         attn_implementation="eager")
        else:
            model = auto.from_config(config, attn_implementation="eager")
    return model.eval()


class _IntoRunLog(logging.Handler):
    """transformers' records into compress's log: run.log during a run; outside one (validate) only
    its errors reach the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger("compress").handlers or record.levelno >= logging.ERROR:
            logging.getLogger("compress.transformers").handle(record)


def quiet_transformers() -> None:
    """transformers prints to stderr with a handler of its own (load reports, progress bars): its
    records go to compress's log instead, and its progress bars are off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.disable_progress_bar()
    library = logging.getLogger("transformers")
    library.propagate = False
    if not any(isinstance(h, _IntoRunLog) for h in library.handlers):
        library.addHandler(_IntoRunLog())


def build(config: HuggingFaceConfig, folder: Path, *, seed: int, file: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model and the factory kwargs that rebuild it; a one-line error for a folder transformers
    cannot read."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise InputError("model.huggingface needs transformers: pip install 'edge-compress[hf]'", file=file,
                         field="model.huggingface") from None
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder} has no config.json: not a Hugging Face model folder", file=file,
                         field="model.huggingface.path")
    kwargs = {"path": str(folder), "task": config.task, "num_labels": config.num_labels, "seed": seed}
    try:
        model = load(**kwargs)
    except Exception as exc:  # transformers raises many kinds for a bad folder
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(f"transformers cannot load {folder} as {config.task}: {type(exc).__name__}: {message}",
                         file=file, field="model.huggingface") from None
    return model, kwargs
