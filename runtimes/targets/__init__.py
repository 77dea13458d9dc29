"""Where the agent runs: `local` (this machine), `cuda[:N]` (its GPU), `ssh://` (a board) and
`adb://` (a phone). Building a target never connects; `prepare()` does, once, and raises
TargetError with a one-line reason; `measure(request, timeout_s)` never raises for a failed
measurement: it answers a Response with its status."""


class TargetError(Exception):
    """A target that cannot be used as given (no device, a refused host key, a missing tool)."""
