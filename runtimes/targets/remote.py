"""What the ssh and adb targets share: the options of a spec, and a request's files packed for a
device under fixed names (so no local name ever reaches a remote shell) and unpacked back."""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import shlex
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .. import agent
from ..protocol import Request, Response

AGENT_FOLDER = Path(__file__).resolve().parent.parent
AGENT_FILES = ("agent.py", "protocol.py", "files.py")
# An absolute folder on a device that is safe to put in a shell command unquoted, and that mktemp made.
REMOTE_DIR = re.compile(r"/[A-Za-z0-9._/-]+")

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


def model_names(request: Request) -> list[tuple[str, Path]]:
    """(name on the device, local path) for a request's model: a folder as `model/`; a file as
    `model.<suffix>`, with the other files its backend says it is made of (an IR's .bin)."""
    model = Path(request.model)
    if model.is_dir():
        return [("model", model)]
    backend = agent.backend_class(request.runtime)
    listed = backend.files(str(model)) if hasattr(backend, "files") else []
    return [(name, Path(path)) for name, path in listed] or [("model" + model.suffix.lower(), model)]


def backend_source(runtime: str) -> Path:
    """The file that defines a runtime's backend, copied to the device beside the agent."""
    backend = agent.backend_class(runtime)
    source = inspect.getsourcefile(backend)
    if source is None:
        raise OSError(f"the {runtime} backend has no source file to copy to a device")
    return Path(source)


def pack(request: Request, bundle: Path) -> Request:
    """Write the agent, the runtime's backend, the model, the inputs and the device's request into a
    tar at `bundle`; return that request (paths relative to the folder the agent runs in)."""
    if not Path(request.model).exists():
        raise FileNotFoundError(f"model not found: {request.model}")
    names = model_names(request)
    device_request = request.replace(model=names[0][0], response=RESPONSE, inputs=INPUTS if request.inputs else None,
                                     outputs=OUTPUTS if request.outputs else None)
    with tarfile.open(bundle, "w", format=tarfile.USTAR_FORMAT, dereference=True) as tar:
        for name in AGENT_FILES:
            tar.add(AGENT_FOLDER / name, arcname=name)
        tar.add(backend_source(request.runtime), arcname=f"backends/{request.runtime}.py")
        for name, path in names:
            tar.add(path, arcname=name)
        if request.inputs:
            tar.add(request.inputs, arcname=INPUTS)
        text = json.dumps(device_request.to_json()).encode()
        info = tarfile.TarInfo(REQUEST)
        info.size, info.mode = len(text), 0o600
        tar.addfile(info, io.BytesIO(text))
    return device_request


def unpack(stream: bytes, request: Request) -> Response | None:
    """The response from a tar of the device's folder (response.json, outputs.npz); outputs are
    written where the local request asked. Members are read by name, never extracted as they say."""
    data: Any = None
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if not member.isfile() or name not in (RESPONSE, OUTPUTS):
                    continue
                content = tar.extractfile(member).read()  # type: ignore[union-attr]
                if name == RESPONSE:
                    data = json.loads(content)
                elif request.outputs:
                    Path(request.outputs).write_bytes(content)
    except (tarfile.TarError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    response = Response.from_json(data)
    if response.outputs:
        response.outputs = request.outputs
    return response


def kill_group_command(folder: str) -> str:
    """A shell command that kills the process group whose id the agent's shell wrote in `folder`."""
    q = shlex.quote(folder)
    return (f'p=$(cat {q}/{PGID} 2>/dev/null) && [ -n "$p" ] && '
            f'{{ kill -9 -"$p" 2>/dev/null || kill -9 "$p" 2>/dev/null; }}')


def run_in_group_command(folder: str, program: str, args: list[str], *, replace_shell: bool) -> str:
    """A shell command that enters `folder`, writes its process group id down and runs `program`
    (the session's shell leads its own group, so killing the group kills all it started). With
    `replace_shell` the shell becomes the program; without, it lives on to report the exit code."""
    return (f"cd {shlex.quote(folder)} && echo $$ > {PGID} && {'exec ' if replace_shell else ''}"
            f"{shlex.quote(program)} " + " ".join(shlex.quote(a) for a in args))


def last_line(text: str | bytes | None, default: str = "") -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else default
