"""Gate results for CI systems: JUnit XML (test reports) and Markdown (a job summary page)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from compress.gates import Check, format_pair
from compress.runtimes.files import write_atomic


def _classname(check: Check) -> str:
    return check.artifact if check.runtime is None else f"{check.artifact}.{check.runtime}"


def junit_tree(checks: Sequence[Check], suite_name: str) -> ET.ElementTree:
    """<testsuites> holding one <testsuite> with a <testcase> per check; failing ones carry a <failure>."""
    failures = sum(1 for c in checks if not c.passed)
    skipped = sum(1 for c in checks if c.skipped)
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
              "time": "0"}
    root = ET.Element("testsuites", {"name": suite_name, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts})
    for check in checks:
        case = ET.SubElement(suite, "testcase", {"classname": _classname(check), "name": check.gate, "time": "0"})
        if check.skipped:
            ET.SubElement(case, "skipped", {"message": check.message})
        elif check.passed:
            ET.SubElement(case, "system-out").text = check.message
        else:
            failure = ET.SubElement(case, "failure", {"message": check.message, "type": check.gate})
            failure.text = f"{check.message}\nvalue: {check.value!r}\nlimit: {check.limit!r}\n"
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(checks: Sequence[Check], path: str | Path, suite_name: str) -> Path:
    """Write JUnit XML for `checks` atomically."""
    tree = junit_tree(checks, suite_name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True) + b"\n")


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_NO_NUMBERS = ("complete", "artifacts", "baseline.present")  # pass / fail only: their value and limit mean nothing


def _numbers(check: Check) -> tuple[str, str]:
    if check.gate in _NO_NUMBERS:
        return "-", "-"
    return format_pair(check.value, check.limit)


def render_markdown(checks: Sequence[Check], title: str) -> str:
    """A headline with pass / fail counts, then a ✅/❌ table (failures first) and the failure messages."""
    failed = [c for c in checks if not c.passed]
    skipped = [c for c in checks if c.skipped]
    passed = [c for c in checks if c.passed and not c.skipped]
    not_compared = f", {len(skipped)} not compared" if skipped else ""
    if failed:
        headline = f"### ❌ {title}: {len(failed)} of {len(failed) + len(passed)} checks failed, {len(passed)} passed"
    else:
        headline = f"### ✅ {title}: all {len(passed)} checks passed"
    lines = [headline + not_compared, "", "| | gate | artifact | runtime | value | limit |",
             "|---|---|---|---|---:|---:|"]
    for check in [*failed, *passed, *skipped]:
        value, limit = ("-", "-") if check.skipped else _numbers(check)
        where = check.runtime or "-"
        if check.runtime is not None and check.target is not None:
            where += f" ({check.target}, {check.threads}t)"
        mark = "⏭️" if check.skipped else "✅" if check.passed else "❌"
        lines.append(f"| {mark} | {_cell(check.gate)} | {_cell(check.artifact)} | {_cell(where)} | {value} | {limit} |")
    if failed:
        lines += ["", "**Failures**", ""]
        lines += [f"- `{_cell(c.gate)}` {c.message}" for c in failed]
    if skipped:
        lines += ["", "**Not compared**", ""]
        lines += [f"- `{_cell(c.gate)}` {c.message}" for c in skipped]
    return "\n".join(lines) + "\n"
