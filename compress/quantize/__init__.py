"""int8 quantization: one intent in the recipe, realized per format by that format's quantizer.

`quantize.ignore` globs are matched against each format's own layer names (ONNX node names,
OpenVINO op names, torch module names for the TFLite path); each glob must match in at least one
format, which the pipeline checks.
"""

from __future__ import annotations

import fnmatch


def match_names(names: list[str], patterns: list[str]) -> list[str]:
    """Names matched by any of the globs, in the names' order."""
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
