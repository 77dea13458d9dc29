"""Mutation score of the core checks: the gates, the metrics and the parity figures.

mutmut changes one operator, constant, argument or call at a time in `compress/gates.py`,
`compress/tasks.py` (cosines, dead and non-finite outputs, agreement), `compress/metrics.py` and the
`parity` function of `compress/verify.py`, and runs against each changed version the fast unit tests
that execute the changed function (TESTS below: no end-to-end run, no export, `-m "not slow"`). A
mutant the tests do not notice (it survived) is a change of behaviour nothing would catch.

Not counted: torch's training and distillation losses at the top of tasks.py (trained through by the
end-to-end tests, not unit-tested) and the rest of verify.py (the verify loop, which needs models
and runtimes). mutmut still mutates those; their results are dropped.

    .venv/bin/pip install mutmut==3.8.1   # not in the dev extra: this benchmark's tool only
    .venv/bin/python benchmarks/mutation_score.py [--keep DIR]

It works on a copy of `compress/` and `tests/` in a temporary folder (mutmut writes its `mutants/`
folder there; nothing is written in the repository), prints per module the mutants killed, survived,
timed out and the rest (no test reached them, or suspicious), the total and the score (killed /
total), then every survivor as file:line with the line it changed. Exit status 1 when mutmut is not
installed, fails to run or leaves a mutant unchecked; the score itself never fails the script.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# module -> the functions counted (None: all of them, less SKIPPED_FUNCTIONS)
MODULES: dict[str, tuple[str, ...] | None] = {
    "compress/gates.py": None,
    "compress/tasks.py": None,
    "compress/metrics.py": None,
    "compress/verify.py": ("parity",),
}
SKIPPED_FUNCTIONS = ("training_loss", "distillation_loss")
# Fast unit tests only (each mutant runs the ones among these that execute the mutated function).
TESTS = [
    "tests/test_gates.py",
    "tests/test_degenerate_outputs.py",
    "tests/test_tasks.py",
    "tests/test_formats.py::test_parity_thresholds_are_exact",
    "tests/test_formats.py::test_parity_names_each_failure_and_fails_on_nan",
    "tests/test_core_mutants.py",
]
PYTEST_ARGS = ["-n", "0", "-p", "no:cacheprovider", "-m", "not slow", "-q"]
COLUMNS = ("killed", "survived", "timeout", "other")
MARKER = ".compress-mutation"  # marks a --keep folder as this script's, so that a rerun may empty it

CONFIG = """
[tool.mutmut]
source_paths = ["compress"]
only_mutate = {only}
pytest_add_cli_args = {pytest_args}
pytest_add_cli_args_test_selection = {tests}
use_git_change_detection = false
"""


@dataclass(frozen=True)
class Mutant:
    name: str  # mutmut's key, e.g. compress.gates.x__ratio__mutmut_3
    module: str  # compress/gates.py
    function: str  # _ratio, or Class.method
    status: str


def function_of(name: str) -> str:
    """`compress.verify.x_parity__mutmut_3` -> parity; `compress.metrics.xǁMetricǁ__call____mutmut_1` ->
    Metric.__call__."""
    mangled = name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return ".".join(mangled.removeprefix("xǁ").split("ǁ"))
    return mangled.removeprefix("x_")


def counted(module: str, function: str) -> bool:
    wanted = MODULES[module]
    if function.split(".")[-1] in SKIPPED_FUNCTIONS:
        return False
    return wanted is None or function in wanted


def selected_tests() -> list[str]:
    """TESTS, less the files this checkout does not have (tests/test_core_mutants.py, before it was written)."""
    return [t for t in TESTS if (ROOT / t.split("::")[0]).is_file()]


def prepare(work: Path) -> None:
    """What mutmut needs, in `work`: the core package, the tests and pyproject.toml with its config."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build")
    shutil.copytree(ROOT / "compress", work / "compress", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    config = CONFIG.format(only=json.dumps(list(MODULES)), pytest_args=json.dumps(PYTEST_ARGS),
                           tests=json.dumps(selected_tests()))
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + config)
    (work / MARKER).touch()


def run_mutmut(work: Path) -> subprocess.CompletedProcess[str]:
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(mutmut), "run", "--max-children", str(os.cpu_count() or 1)], cwd=work, env=env,
                          capture_output=True, text=True, check=False)


def collect(work: Path) -> list[Mutant]:
    """The counted mutants and their status, from mutmut's .meta files."""
    from mutmut.stats import status_by_exit_code

    mutants = []
    for module in MODULES:
        meta = work / "mutants" / f"{module}.meta"
        if not meta.is_file():
            raise RuntimeError(f"mutmut left no results for {module} (expected {meta})")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            function = function_of(name)
            if counted(module, function):
                mutants.append(Mutant(name, module, function, status_by_exit_code[code]))
    return mutants


def column(status: str) -> str:
    return status if status in COLUMNS else "other"


def print_scores(mutants: list[Mutant]) -> None:
    rows: dict[str, Counter[str]] = {}
    for m in mutants:
        label = m.module + (f" ({', '.join(MODULES[m.module] or ())})" if MODULES[m.module] else "")
        rows.setdefault(label, Counter())[column(m.status)] += 1
    rows["all"] = sum(rows.values(), Counter())
    print(f"{'module':30} {'killed':>7} {'survived':>9} {'timeout':>8} {'other':>6} {'total':>6} {'score':>7}")
    for label, counts in rows.items():
        total = sum(counts.values())
        cells = " ".join(f"{counts[c]:{w}d}" for c, w in zip(COLUMNS, (7, 9, 8, 6), strict=True))
        print(f"{label:30} {cells} {total:6d} {counts['killed'] / total:7.1%}")
    other = Counter(m.status for m in mutants if column(m.status) == "other")
    if other:
        print("other: " + ", ".join(f"{n} {status}" for status, n in sorted(other.items())))


def function_lines(module: str) -> dict[str, int]:
    """{function or Class.method: the line of its `def`} in the repository's (unmutated) source."""
    tree = ast.parse((ROOT / module).read_text())
    lines: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[node.name] = node.lineno
        elif isinstance(node, ast.ClassDef):
            lines.update({f"{node.name}.{item.name}": item.lineno for item in node.body
                          if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)})
    return lines


def describe(work: Path, mutant: Mutant, starts: dict[str, int]) -> tuple[int, int, list[str]]:
    """`file:line function` and the changed lines (- before, + after), from mutmut's diff of the function."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    os.chdir(work)  # mutmut reads mutants/<module> relative to the working folder
    try:
        diff = get_diff_for_mutant(mutant.name, path=Path(mutant.module)).splitlines()
    finally:
        os.chdir(here)
    hunk = next((int(h.group(1)) for line in diff if (h := re.match(r"@@ -(\d+)", line))), 1)
    body = [line for line in diff if line[:1] in " -+" and not line.startswith(("---", "+++"))]
    offset = next((i for i, line in enumerate(body) if line[:1] == "-"), 0)
    at = starts.get(mutant.function, 0) + hunk - 1 + offset
    changed = [f"      {text[0]} {text[1:].strip()}" for text in body if text[:1] in "-+"]
    number = int(mutant.name.rsplit("__mutmut_", 1)[-1])
    return at, number, [f"  {mutant.module}:{at} {mutant.function} [{number}]", *changed]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    try:
        import mutmut
    except ImportError:
        print("error: mutmut is not installed in this environment: pip install mutmut==3.8.1", file=sys.stderr)
        return 1
    if args.keep and args.keep.exists() and any(args.keep.iterdir()) and not (args.keep / MARKER).is_file():
        print(f"error: {args.keep} is not empty and not a folder this script made: not emptying it", file=sys.stderr)
        return 1
    work = (args.keep or Path(tempfile.mkdtemp(prefix="compress-mutation-"))).resolve()
    started = time.monotonic()
    try:
        if args.keep:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
        prepare(work)
        done = run_mutmut(work)
        if done.returncode != 0:
            print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
            print(f"error: mutmut run exited {done.returncode}", file=sys.stderr)
            return 1
        mutants = collect(work)
        print(f"mutmut {mutmut.__version__}; tests: {' '.join(selected_tests())} ({' '.join(PYTEST_ARGS)})\n")
        print_scores(mutants)
        starts = {module: function_lines(module) for module in MODULES}
        survivors = sorted((list(MODULES).index(m.module), *describe(work, m, starts[m.module]))
                           for m in mutants if m.status == "survived")
        print(f"\nsurvivors ({len(survivors)}):")
        for *_, text in survivors:
            print("\n".join(text))
        print(f"\n{time.monotonic() - started:.0f} s")
        unchecked = [m.name for m in mutants if m.status == "not checked"]
        if unchecked:
            print(f"error: {len(unchecked)} mutants were not checked (mutmut stopped early?)", file=sys.stderr)
            return 1
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
