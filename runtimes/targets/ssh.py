"""`ssh://[user@]host[:port][?options]`: the device agent on a board over SSH (docs/targets.md).

The system's `ssh` runs every step, from argument lists (no local shell); every word of a remote
command is quoted with shlex.quote. Host keys are checked against known_hosts (BatchMode, strict
checking): an unknown or changed key is refused with the server's fingerprint shown. Each
measurement gets a private folder from `mktemp -d` (mode 0700) holding the agent, the model and the
inputs under fixed names; the agent runs there as the leader of the SSH session's process group,
whose id is written down so that a timeout kills the whole group over a new connection. The
response and outputs come back, and the folder is removed whatever happened. A connection that
drops during a run makes the measurement `incomplete`, never a pass.

Options: python (on the device, default python3), identity (a private key here), known_hosts (a
known_hosts file here, instead of ~/.ssh/known_hosts), connect_timeout (s, default 15),
transfer_timeout (s per copy step, default 300), tmpdir (folder on the device for the private
folders, default $TMPDIR or /tmp).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..protocol import Request, Response
from . import TargetError, remote

OPTIONS = {"python": "Python on the device", "identity": "private key file", "known_hosts": "known_hosts file",
           "connect_timeout": "seconds", "transfer_timeout": "seconds", "tmpdir": "folder on the device"}
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
_PROBE = ("import json, platform, sys\n"
          "try:\n    import numpy; n = numpy.__version__\nexcept ImportError:\n    n = None\n"
          "print(json.dumps({'python': platform.python_version(), 'executable': sys.executable, 'numpy': n,"
          " 'ok': sys.version_info >= (3, 8)}))")


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssh_option_path(path: str) -> str:
    if '"' in path:
        raise ValueError(f"{path!r}: a path with a double quote cannot be given to ssh")
    return f'"{path}"' if any(c.isspace() for c in path) else path


class SshTarget:
    def __init__(self, host: str, *, user: str | None = None, port: int = 22, python: str = "python3",
                 identity: str | None = None, known_hosts: str | None = None, connect_timeout: float = 15.0,
                 transfer_timeout: float = 300.0, tmpdir: str | None = None) -> None:
        self.hostname, self.user, self.port = host, user, port
        self.python, self.identity, self.known_hosts = python, identity, known_hosts
        self.connect_timeout, self.transfer_timeout, self.tmpdir = connect_timeout, transfer_timeout, tmpdir
        address = f"[{host}]" if ":" in host else host
        self.name = f"ssh://{user + '@' if user else ''}{address}{':' + str(port) if port != 22 else ''}"
        # ssh to this machine is this machine: measured one after another with local, not beside it
        self.host = "localhost" if _loopback(host) else f"ssh:{address}:{port}"

    @classmethod
    def from_spec(cls, spec: str) -> SshTarget:
        parts = urlsplit(spec)
        if parts.scheme != "ssh" or parts.fragment:
            raise ValueError("expected ssh://[user@]host[:port][?option=value&...]")
        if parts.password is not None:
            raise ValueError("passwords are not accepted in a target; log in with a key (?identity=/path/to/key)")
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name or IP address") from None
        if parts.path not in ("", "/"):
            raise ValueError("expected ssh://[user@]host[:port][?option=value&...] (no path)")
        user = parts.username
        if user is not None and not _USER.fullmatch(user):
            raise ValueError(f"{user!r} is not a user name")
        try:
            port = 22 if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        options = remote.parse_options(parts.query, OPTIONS)
        tmpdir = options.get("tmpdir")
        if tmpdir is not None and not remote.REMOTE_DIR.fullmatch(tmpdir):
            raise ValueError(f"option tmpdir={tmpdir!r} must be an absolute path of letters, digits and ._/-")
        return cls(host, user=user, port=port, python=remote.remote_word(options, "python", "python3"),
                   identity=remote.local_file(options, "identity"),
                   known_hosts=remote.local_file(options, "known_hosts"),
                   connect_timeout=remote.positive_float(options, "connect_timeout", 15.0),
                   transfer_timeout=remote.positive_float(options, "transfer_timeout", 300.0), tmpdir=tmpdir)

    # -- ssh -------------------------------------------------------------------------------------

    def _argv(self, command: str) -> list[str]:
        argv = ["ssh", "-T", "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "ClearAllForwardings=yes",
                "-o", "PermitLocalCommand=no", "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={_ssh_option_path(self.known_hosts)}",
                     "-o", "GlobalKnownHostsFile=/dev/null"]
        destination = f"{self.user}@{self.hostname}" if self.user else self.hostname
        return [*argv, "--", destination, command]

    def _run(self, command: str, timeout: float, stdin: Path | None = None) -> subprocess.CompletedProcess:
        """One remote command (already quoted). TimeoutExpired kills the local ssh and is re-raised."""
        if stdin is None:
            return subprocess.run(self._argv(command), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        with open(stdin, "rb") as handle:
            return subprocess.run(self._argv(command), stdin=handle, capture_output=True, timeout=timeout)

    def _connection_error(self, stderr: bytes) -> str | None:
        """A one-line reason when ssh itself failed (exit 255) before running anything."""
        text = stderr.decode(errors="replace")
        where = f"{self.hostname}:{self.port}"
        known = self.known_hosts or "~/.ssh/known_hosts"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            name = self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"
            return (f"the host key of {where} has CHANGED (the server now offers {self.fingerprints()}); refused. "
                    f"If the device was reinstalled, check that key, remove the old one with "
                    f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(known)} and add the new one")
        if "Host key verification failed" in text or "host key is known" in text:
            return (f"the host key of {where} is not in {known}; refused (the server offers "
                    f"{self.fingerprints()}). If that is the device's key, add it with: "
                    f"ssh-keyscan -p {self.port} {shlex.quote(self.hostname)} >> {shlex.quote(known)}")
        if "Permission denied" in text:
            return (f"{where} refused the login{' of ' + self.user if self.user else ''} "
                    f"({remote.last_line(text)}); give a key with ?identity=/path/to/key")
        if any(s in text for s in ("Connection refused", "Could not resolve", "timed out", "No route",
                                   "Network is unreachable", "Connection closed", "kex_exchange")):
            return f"cannot connect to {where}: {remote.last_line(text)}"
        return None

    def fingerprints(self) -> str:
        """The server's host key fingerprints, as ssh-keygen prints them ('ED25519 SHA256:...')."""
        try:
            scan = subprocess.run(["ssh-keyscan", "-p", str(self.port), "-T", "5", "--", self.hostname],
                                  capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
            listed = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=scan.stdout, capture_output=True,
                                    timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"fingerprint unknown: {exc}"
        found = []
        for line in listed.stdout.decode(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[1].startswith(("SHA256:", "MD5:")):
                found.append(f"{words[-1].strip('()')} {words[1]}")
        return ", ".join(found) or "no key could be read with ssh-keyscan"

    # -- the Target contract ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Log in once: host key, login, the device's Python (3.8+) and numpy."""
        command = f"{shlex.quote(self.python)} -c {shlex.quote(_PROBE)}"
        try:
            done = self._run(command, timeout=self.connect_timeout + 30)
        except subprocess.TimeoutExpired:
            raise TargetError(f"target {self.name}: no answer within {self.connect_timeout + 30:g} s") from None
        except FileNotFoundError:
            raise TargetError(f"target {self.name}: the ssh client is not installed here (openssh-client)") from None
        if done.returncode == 255:
            reason = self._connection_error(done.stderr) or f"ssh failed: {remote.last_line(done.stderr)}"
            raise TargetError(f"target {self.name}: {reason}")
        if done.returncode in (126, 127):
            raise TargetError(f"target {self.name}: {self.python!r} was not found on the device "
                             f"({remote.last_line(done.stderr)}); give its path with ?python=/path/to/python3")
        try:
            probe = json.loads(remote.last_line(done.stdout))
        except ValueError:
            raise TargetError(f"target {self.name}: {self.python!r} on the device did not answer as Python 3 "
                             f"({remote.last_line(done.stderr or done.stdout, 'no output')})") from None
        if not probe.get("ok"):
            raise TargetError(f"target {self.name}: the agent needs Python 3.8+; {probe['executable']} is "
                             f"{probe['python']}")
        if probe.get("numpy") is None:
            raise TargetError(f"target {self.name}: numpy is not installed on the device (python {probe['python']} "
                             f"at {probe['executable']}): pip install numpy")

    def measure(self, request: Request, timeout_s: float) -> Response:
        folder: str | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="compress-ssh-") as scratch:
                bundle = Path(scratch) / "bundle.tar"
                try:
                    remote.pack(request, bundle)
                except OSError as exc:
                    return Response.failure("failed", f"cannot pack the request: {exc}")
                folder, failure = self._upload(bundle)
                if failure:
                    return failure
                assert folder is not None
                failure, done = self._execute(folder, timeout_s)
                if failure:
                    return failure
                response, folder = self._fetch(folder, request, done)
                return response
        finally:
            if folder is not None:
                self._clean(folder)

    def _template(self) -> str:
        base = shlex.quote(self.tmpdir) if self.tmpdir else '"${TMPDIR:-/tmp}"'
        return f"{base}/compress-agent.XXXXXXXX"

    def _upload(self, bundle: Path) -> tuple[str | None, Response | None]:
        command = f'umask 077 && d=$(mktemp -d {self._template()}) && echo "$d" && cd "$d" && tar -xf -'
        try:
            done = self._run(command, timeout=self.transfer_timeout, stdin=bundle)
        except subprocess.TimeoutExpired:
            return None, Response.failure("timeout", f"copying to {self.name} took more than "
                                                     f"{self.transfer_timeout:g} s")
        first = done.stdout.decode(errors="replace").split("\n", 1)[0].strip()
        folder = first if remote.REMOTE_DIR.fullmatch(first) and "compress-agent." in first else None
        if done.returncode != 0:
            reason = (self._connection_error(done.stderr) if done.returncode == 255 else None) or \
                remote.last_line(done.stderr, f"exit code {done.returncode}")
            status = "incomplete" if done.returncode == 255 else "failed"
            return folder, Response.failure(status, f"copying to {self.name} failed: {reason}")
        if folder is None:
            return None, Response.failure("failed", f"{self.name}: mktemp -d on the device gave {first!r}")
        return folder, None

    def _execute(self, folder: str, timeout_s: float) -> tuple[Response | None, subprocess.CompletedProcess | None]:
        # The SSH session's shell leads its own process group (sshd starts it with setsid).
        command = remote.run_in_group_command(folder, self.python, ["agent.py", remote.REQUEST], replace_shell=True)
        try:
            done = self._run(command, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            killed = self._kill(folder)
            return Response.failure("timeout", f"the measurement on {self.name} did not finish within {timeout_s:g} s "
                                    f"and was killed{'' if killed else ' (the kill could not be confirmed)'}"), None
        if done.returncode == 255:
            self._kill(folder)
            reason = remote.last_line(done.stderr, "no message")
            return Response.failure("incomplete", f"the connection to {self.name} dropped during the measurement "
                                                  f"({reason})"), None
        if done.returncode in (126, 127):
            return Response.failure("failed", f"{self.python!r} was not found on the device "
                                              f"({remote.last_line(done.stderr)})"), None
        return None, done

    def _fetch(self, folder: str, request: Request,
               ran: subprocess.CompletedProcess) -> tuple[Response, str | None]:
        q = shlex.quote(folder)
        command = (f"cd {q} && if [ -f {remote.OUTPUTS} ]; then tar -cf - {remote.RESPONSE} {remote.OUTPUTS}; "
                   f"else tar -cf - {remote.RESPONSE}; fi; s=$?; cd / && rm -rf {q}; exit $s")
        try:
            done = self._run(command, timeout=self.transfer_timeout)
        except subprocess.TimeoutExpired:
            return Response.failure("incomplete", f"copying the results back from {self.name} took more than "
                                                  f"{self.transfer_timeout:g} s"), folder
        if done.returncode == 255:
            return Response.failure("incomplete", f"the connection to {self.name} dropped while copying the results "
                                                  f"back ({remote.last_line(done.stderr)})"), folder
        response = remote.unpack(done.stdout, request) if done.returncode == 0 else None
        if response is None:
            tail = remote.last_line(ran.stderr, f"exit code {ran.returncode}")
            return Response.failure("failed", f"the agent on {self.name} crashed (exit code {ran.returncode}): "
                                              f"{tail}"), None
        if request.outputs and response.ok and not Path(request.outputs).is_file():
            return Response.failure("incomplete", f"{self.name} sent no outputs back"), None
        return response, None

    def _kill(self, folder: str) -> bool:
        """Kill the agent's process group on the device (over a new connection)."""
        command = remote.kill_group_command(folder) + "; exit 0"
        try:
            return self._run(command, timeout=self.connect_timeout + 15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _clean(self, folder: str) -> None:
        q = shlex.quote(folder)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run(f"rm -rf {q}", timeout=self.connect_timeout + 15)
