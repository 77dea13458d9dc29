"""What the ssh and adb targets share: the options of a spec, and a request's files packed for a
device under fixed names (so no local name ever reaches a remote shell) and unpacked back."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

AGENT = Path(__file__).with_name("agent.py")

# The names a request's files have in the device's private folder; the agent runs in that folder.
REQUEST, RESPONSE, OUTPUTS, INPUTS, PGID = "request.json", "response.json", "outputs.npz", "inputs.npz", "pgid"


def parse_options(query: str, known: dict[str, str]) -> dict[str, str]:
    """`a=1&b=2` -> {a: "1", b: "2"}; an unknown or repeated option is a ValueError naming the known ones."""
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in known:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(sorted(known))})")
        if key in options:
            raise ValueError(f"option {key!r} is given twice")
        if not value:
            raise ValueError(f"option {key!r} has no value")
        options[key] = value
    return options


def positive_float(options: dict[str, str], key: str, default: float) -> float:
    if key not in options:
        return default
    try:
        value = float(options[key])
    except ValueError:
        raise ValueError(f"option {key}={options[key]!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"option {key} must be more than 0 seconds")
    return value


def local_file(options: dict[str, str], key: str) -> str | None:
    """An option naming a file on this machine (a key, a known_hosts): it must exist."""
    if key not in options:
        return None
    path = os.path.expanduser(options[key])
    if not os.path.isfile(path):
        raise ValueError(f"option {key}: {path} is not a file")
    return path


def remote_word(options: dict[str, str], key: str, default: str) -> str:
    """A path or command on the device. It is always quoted; a leading '-' would read as an option."""
    value = options.get(key, default)
    if value.startswith("-") or "\n" in value or "\0" in value:
        raise ValueError(f"option {key}={value!r} is not a path")
    return value


def model_names(model: Path) -> list[tuple[str, Path]]:
    """(name on the device, local path) for a model: a folder as `model/`, a file as `model.<suffix>`,
    an OpenVINO .xml with the .bin beside it."""
    if model.is_dir():
        return [("model", model)]
    names = [("model" + model.suffix.lower(), model)]
    if model.suffix.lower() == ".xml" and model.with_suffix(".bin").is_file():
        names.append(("model.bin", model.with_suffix(".bin")))
    return names


def pack(request: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """Write the agent, the model, the inputs and the device's request into a tar at `bundle`;
    return that request (paths relative to the folder the agent runs in)."""
    model = Path(request["model"])
    if not model.exists():
        raise FileNotFoundError(f"model not found: {model}")
    names = model_names(model)
    remote = {k: v for k, v in request.items() if k not in ("python_path", "response")}
    remote.update(model=names[0][0] if not model.is_dir() else "model", response=RESPONSE,
                  outputs=OUTPUTS if request.get("outputs") else None)
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT, dereference=True) as tar:
        tar.add(AGENT, arcname="agent.py")
        for name, path in names:
            tar.add(path, arcname=name)
        if request.get("inputs"):
            tar.add(request["inputs"], arcname=INPUTS)
            remote["inputs"] = INPUTS
        text = json.dumps(remote).encode()
        info = tarfile.TarInfo(REQUEST)
        info.size, info.mode = len(text), 0o600
        tar.addfile(info, io.BytesIO(text))
    return remote


def unpack(stream: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
    """The response from a tar of the device's folder (response.json, outputs.npz); outputs are
    written where the local request asked. Members are read by name, never extracted as they say."""
    response = None
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if not member.isfile() or name not in (RESPONSE, OUTPUTS):
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if name == RESPONSE:
                    response = json.loads(data)
                elif request.get("outputs"):
                    Path(request["outputs"]).write_bytes(data)
    except (tarfile.TarError, ValueError):
        return None
    if isinstance(response, dict):
        if response.get("outputs"):
            response["outputs"] = request.get("outputs")
        response.setdefault("status", "ok" if response.get("ok") else "failed")
        return response
    return None


def last_line(text: str | bytes | None, default: str = "") -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else default
