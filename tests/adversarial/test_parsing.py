"""Every file the tool reads is parsed within bounds: size, regular files only, aliases and nesting
counted, control characters refused; each a one-line error with exit code 2."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.adversarial.conftest import Sandbox, minimal_results, recipe

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize(("content", "message"), [
    (LAUGHS, "the document expands to more than 100,000 values (through its aliases); refused"),
    ("a: &a [*a]\n", "a YAML alias refers to the value that holds it (a document without end); refused"),
    ("x: " + "[" * 200 + "]" * 200 + "\n", "the document nests deeper than 64 levels; refused"),
    ("name: a\x00b\n", "recipe file holds a control character ('\\x00'), which no recipe file has"),
    ("name: a\x1bb\n", "holds a control character"),
    (b"name: \xff\xfe\n", "recipe file is not UTF-8 text (byte 6)"),
    ("a: [1, 2\n", "invalid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "invalid YAML"),  # python tags are inert: refused, not run
    ("", "a recipe is a mapping of keys"),
    ("- 1\n- 2\n", "a recipe is a mapping of keys"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
])
def test_a_hostile_recipe_is_one_line_exit_2(box: Sandbox, content: str | bytes, message: str) -> None:
    path = box.write("recipe.yaml", content)
    outcome = box.cli("validate", path)
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert line.startswith(f"error: {path}") and message in line, line


def test_a_huge_recipe_is_refused_by_its_size_at_once(box: Sandbox) -> None:
    path = box.write("recipe.yaml", "# " + "x" * (2 << 20) + "\n")
    line = box.cli("validate", path).one_line_error()
    assert line == f"error: {path}: recipe file is {path.stat().st_size:,} bytes, more than the 1,048,576 a recipe " \
                   "file may be"


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null", "folder", "fifo"])
def test_a_recipe_that_is_not_a_regular_file_is_refused(box: Sandbox, target: str) -> None:
    if target == "folder":
        path = box.root / "folder.yaml"
        path.mkdir()
    elif target == "fifo":
        path = box.root / "pipe.yaml"
        os.mkfifo(path)  # reading it would block forever
    else:
        path = box.root / "link.yaml"
        path.symlink_to(target)
    outcome = box.cli("validate", path)
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert ("is a folder" in line) if target == "folder" else ("is a device or a pipe, not a regular file" in line)


def test_a_missing_recipe(box: Sandbox) -> None:
    line = box.cli("validate", box.root / "nope.yaml").one_line_error()
    assert line == f"error: {box.root / 'nope.yaml'}: recipe file not found"


@pytest.mark.parametrize(("override", "message"), [
    ("name=" + "[" * 100 + "]" * 100, "the document nests deeper than 64 levels"),
    ("seed=" + "x" * 70000, "the value is too long or holds control characters"),
    ("stages[7].prune.epochs=1", "stages[7] does not exist"),
    ("nokeypath", "expected key.path=value"),
])
def test_a_hostile_override_is_one_line_exit_2(box: Sandbox, override: str, message: str) -> None:
    path = box.write("recipe.yaml", recipe())
    outcome = box.cli("validate", path, "--set", override)
    assert outcome.code == 2 and message in outcome.one_line_error()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seed", ".nan", "seed"), ("model", "{factory: compress.zoo.digits:DigitsCNN, input: {shape: [1, .inf]}}",
                               "model.input.shape[1]"),
])
def test_nan_and_inf_are_refused_where_a_number_is_read(box: Sandbox, field: str, value: str, message: str) -> None:
    data = recipe()
    data[field] = yaml.safe_load(value)
    path = box.write("recipe.yaml", yaml.safe_dump(data))
    outcome = box.cli("validate", path)
    assert outcome.code == 2 and message in outcome.one_line_error()


@pytest.mark.parametrize(("content", "message"), [
    (LAUGHS, "the document expands to more than 100,000 values"),
    ("max_accuracy_drop: .nan\n", "max_accuracy_drop: must be a finite number >= 0"),
    ("max_accuracy_drop: 150%\n", "a relative drop is at most 100%"),
    ("max_size_mb: .inf\n", "max_size_mb"),
    ("\x07\n", "control character"),
])
def test_a_hostile_gates_file_is_one_line_exit_2(box: Sandbox, content: str, message: str) -> None:
    results = box.write("run/results.json", minimal_results())
    gates = box.write("gates.yaml", content)
    outcome = box.cli("gate", results.parent, "--gates", gates)
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert message in line, line


@pytest.mark.parametrize(("content", "message"), [
    ("{" * 100000 + "}" * 100000, "invalid JSON"),
    ("[1, 2", "invalid JSON: EOF while parsing a list"),
    ("\x00", "results file holds a control character"),
    (json.dumps({"schema_version": 1}), "required key is missing"),
])
def test_hostile_results_and_baselines_are_one_line_exit_2(box: Sandbox, content: str, message: str) -> None:
    results = box.write("run/results.json", content)
    outcome = box.cli("gate", results, "--gates", box.write("g.yaml", "max_size_mb: 1\n"))
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert line.startswith(f"error: {results}") and message in line, line
    baseline = box.write("baseline.json", content)
    good = box.write("run2/results.json", minimal_results())
    outcome = box.cli("gate", good, "--baseline", baseline)
    assert outcome.code == 2
    outcome.one_line_error()
