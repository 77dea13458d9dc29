"""Recipe validation: `compress validate`, `--set` overrides and `compress schema` (no runs here).

Every failure must be one stderr line, `error: FILE:LINE: FIELD: MESSAGE`, with exit code 2.
Raw YAML text is written where a test checks line numbers, so the expected lines are known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from compress.errors import InputError
from compress.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]

# A small valid recipe in block style. Line numbers are asserted below: keep them in step.
BASE = """\
schema_version: 1
name: small
model:
  factory: compress.zoo.digits:DigitsCNN
  kwargs:
    width: 8
  input:
    shape: [1, 1, 8, 8]
stages:
  - prune:
      target_macs_ratio: 0.6
  - distill:
      epochs: 1
      temperature: 4.0
      alpha: 0.7
quantize:
  precision: int8
export: [onnx]
"""
LINE = {"schema_version": 1, "name": 2, "model": 3, "factory": 4, "shape": 8, "stages": 9,
        "prune": 10, "target_macs_ratio": 11, "distill": 12, "epochs": 13, "temperature": 14,
        "quantize": 16, "export": 18}


def variant(*replacements: tuple[str, str], text: str = BASE) -> str:
    """BASE with each (old, new) replaced; each `old` must occur exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def fails(result: Any, expected: str | None = None) -> str:
    """Check a validation failure: exit 2, nothing on stdout, one line on stderr. Returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in result.stderr
    if expected is not None:
        assert line == expected
    return line


def test_base_recipe_is_valid(cli, write_recipe):
    path = write_recipe(BASE)
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{path}: valid (prune, distill; export onnx)\n"
    assert result.stderr == ""


# 1. The shipped quickstart --------------------------------------------------------------------


def test_quickstart_validates(cli, monkeypatch):
    monkeypatch.chdir(REPO)
    result = cli("validate", "recipes/quickstart.yaml")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "recipes/quickstart.yaml: valid (prune, distill; export onnx, openvino, tflite)\n"
    assert result.stderr == ""


def test_quickstart_loads_both_stages_with_their_configs():
    loaded = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert [s.name for s in loaded.stages] == ["prune", "distill"]
    prune, distill = (s.config for s in loaded.stages)
    assert prune.target_macs_ratio == 0.45 and prune.iterative_steps == 4
    assert distill.teacher == "original" and distill.epochs == 10 and distill.temperature == 4.0
    assert loaded.recipe.export == ["onnx", "openvino", "tflite"]


# 2. Unknown keys ------------------------------------------------------------------------------


def test_unknown_stage_key_names_file_line_path_and_suggestion(cli, write_recipe):
    path = write_recipe(variant(("      temperature: 4.0", "      temprature: 4.0")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['temperature']}: stages[1].distill.temprature: "
          "unknown key 'temprature' (did you mean 'temperature'?)")


def test_unknown_stage_key_in_quickstart_flow_mapping(cli, write_recipe):
    text = (REPO / "recipes" / "quickstart.yaml").read_text()
    path = write_recipe(variant(("temperature: 4.0", "temprature: 4.0"), text=text))
    line = 1 + text.splitlines().index(next(x for x in text.splitlines() if "- distill:" in x))
    fails(cli("validate", path),
          f"error: {path}:{line}: stages[1].distill.temprature: "
          "unknown key 'temprature' (did you mean 'temperature'?)")


def test_unknown_prune_key_suggests_the_close_one(cli, write_recipe):
    path = write_recipe(variant(("      target_macs_ratio: 0.6", "      target_macs_ratio: 0.6\n      imporance: l1")))
    fails(cli("validate", path),
          f"error: {path}:12: stages[0].prune.imporance: unknown key 'imporance' (did you mean 'importance'?)")


def test_unknown_key_without_a_close_match_lists_the_valid_keys(cli, write_recipe):
    path = write_recipe(variant(("      alpha: 0.7", "      alpha: 0.7\n      zzz: 1")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:16: stages[1].distill.zzz: unknown key 'zzz' (valid keys: teacher, ")
    assert "temperature" in line and "did you mean" not in line


def test_unknown_top_level_key_typo_of_model_suggests_model(cli, write_recipe):
    # `model` is required, so the typo also makes it missing; the message must still point at the
    # typo and suggest the right key rather than only saying `model` is missing.
    path = write_recipe(variant(("model:\n", "modle:\n")))
    line = fails(cli("validate", path))
    assert f"{path}:{LINE['model']}: modle: " in line
    assert "unknown key 'modle' (did you mean 'model'?)" in line


def test_unknown_top_level_key_suggests_export(cli, write_recipe):
    path = write_recipe(variant(("export: [onnx]", "exprot: [onnx]")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['export']}: exprot: unknown key 'exprot' (did you mean 'export'?)")


def test_unknown_nested_outer_key(cli, write_recipe):
    path = write_recipe(variant(("  precision: int8", "  precision: int8\n  per_chanel: true")))
    fails(cli("validate", path),
          f"error: {path}:18: quantize.per_chanel: unknown key 'per_chanel' (did you mean 'per_channel'?)")


# 3. Wrong types and out-of-range values -------------------------------------------------------


def test_wrong_type_names_path_and_line(cli, write_recipe):
    path = write_recipe(variant(("      epochs: 1", '      epochs: "five"')))
    fails(cli("validate", path),
          f"error: {path}:{LINE['epochs']}: stages[1].distill.epochs: "
          "must be a valid integer, unable to parse string as an integer (got 'five')")


def test_wrong_type_in_flow_mapping(cli, write_recipe):
    path = write_recipe(variant(("  - distill:\n      epochs: 1\n", '  - distill: {epochs: "five"}\n'),
                                ("      temperature: 4.0\n      alpha: 0.7\n", "")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['distill']}: stages[1].distill.epochs: must be a valid integer")
    assert line.endswith("(got 'five')")


def test_out_of_range_temperature(cli, write_recipe):
    path = write_recipe(variant(("      temperature: 4.0", "      temperature: -1")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['temperature']}: ")
    assert "stages[1].distill.temperature: must be > 0" in line
    assert line.endswith("(got -1)")


@pytest.mark.parametrize(("old", "new", "field", "message"), [
    ("      alpha: 0.7", "      alpha: 1.5", "stages[1].distill.alpha", "must be <= 1"),
    ("      target_macs_ratio: 0.6", "      target_macs_ratio: 1.0", "stages[0].prune.target_macs_ratio",
     "must be < 1"),
    ("  precision: int8", "  precision: int4", "quantize.precision", "must be 'int8'"),
])
def test_other_bounds_and_literals(cli, write_recipe, old, new, field, message):
    path = write_recipe(variant((old, new)))
    line = fails(cli("validate", path))
    expected_line = BASE.splitlines().index(old) + 1
    assert line.startswith(f"error: {path}:{expected_line}: {field}: {message}")


def test_input_shape_entries_must_be_positive(cli, write_recipe):
    path = write_recipe(variant(("    shape: [1, 1, 8, 8]", "    shape: [1, 0, 8, 8]")))
    fails(cli("validate", path), f"error: {path}:{LINE['shape']}: model.input.shape[1]: must be > 0 (got 0)")


# 4. Two-phase validation ----------------------------------------------------------------------


def test_two_bad_stages_report_only_the_first(cli, write_recipe):
    path = write_recipe(variant(("      target_macs_ratio: 0.6", "      target_macs_ratio: 0.6\n      bogus: 1"),
                                ("      temperature: 4.0", "      temperature: -1")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:12: stages[0].prune.bogus: unknown key 'bogus'")
    assert "stages[1]" not in line
    assert "more error" not in line


def test_each_stage_error_counts_only_its_own_stage(cli, write_recipe):
    # Two errors in stage 0, one in stage 1: the suffix counts stage 0's second error only.
    path = write_recipe(variant(("      target_macs_ratio: 0.6", "      target_macs_ratio: 0.6\n"
                                                                 "      iterative_steps: 0\n      bogus: 1"),
                                ("      temperature: 4.0", "      temperature: -1")))
    line = fails(cli("validate", path))
    assert "stages[0].prune." in line
    assert line.endswith("(and 1 more error)")


def test_outer_error_is_reported_before_stage_errors(cli, write_recipe):
    path = write_recipe(variant(("    shape: [1, 1, 8, 8]", '    shape: "abc"'),
                                ("      temperature: 4.0", "      temperature: -1"),
                                ("      target_macs_ratio: 0.6", "      bogus: 1")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['shape']}: model.input.shape: must be a valid list (got 'abc')")


def test_stage_with_two_keys_is_an_outer_error(cli, write_recipe):
    path = write_recipe(variant(("  - prune:\n", "  - distill: {}\n    prune:\n")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['stages']}: stages: each stage is a mapping with exactly one key, the stage name "
          "(e.g. '- prune: {importance: l2}')")


def test_stage_config_may_be_empty_or_null(cli, write_recipe):
    path = write_recipe(variant(("  - distill:\n      epochs: 1\n      temperature: 4.0\n      alpha: 0.7\n",
                                 "  - distill:\n  - distill: {}\n")))
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert "(prune, distill, distill;" in result.stdout


# 5. File, YAML and schema_version problems ----------------------------------------------------


def test_missing_recipe_file(cli, tmp_path):
    path = tmp_path / "nope.yaml"
    fails(cli("validate", path), f"error: {path}: recipe file not found")


def test_missing_recipe_file_through_load_recipe(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert info.value.exit_code == 2
    assert info.value.file == str(path)
    assert str(info.value) == f"{path}: recipe file not found"


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("schema_version: 1\nname: x\nmodel: [1, 2\nstages: []\n", 4, "expected ',' or ']', but got ':'"),
    ("schema_version: 1\nname: x\nmodel:\n\tfactory: a:b\n", 4, "found character '\\t' that cannot start any token"),
    ("schema_version: 1\nname: x\n  bad: indent\n", 3, "mapping values are not allowed here"),
])
def test_invalid_yaml_reports_the_line(cli, write_recipe, text, line, problem):
    path = write_recipe(text)
    fails(cli("validate", path), f"error: {path}:{line}: invalid YAML: {problem}")


def test_python_tags_are_refused_not_executed(cli, write_recipe, tmp_path):
    marker = tmp_path / "pwned"
    path = write_recipe(variant(("stages:\n", f'boom: !!python/object/apply:os.system ["touch {marker}"]\nstages:\n')))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:9: invalid YAML: could not determine a constructor")
    assert not marker.exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n"])
def test_recipe_must_be_a_mapping(cli, write_recipe, text):
    path = write_recipe(text)
    fails(cli("validate", path), f"error: {path}: a recipe is a mapping of keys (schema_version, name, model, ...)")


def test_duplicate_top_level_key(cli, write_recipe):
    path = write_recipe(variant(("name: small\n", "name: small\nname: other\n")))
    fails(cli("validate", path), f"error: {path}:3: name: duplicate key 'name'")


def test_duplicate_key_inside_a_stage(cli, write_recipe):
    path = write_recipe(variant(("      alpha: 0.7\n", "      alpha: 0.7\n      epochs: 2\n")))
    fails(cli("validate", path), f"error: {path}:16: stages[1].distill.epochs: duplicate key 'epochs'")


def test_schema_version_2_is_refused(cli, write_recipe):
    path = write_recipe(variant(("schema_version: 1", "schema_version: 2")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['schema_version']}: schema_version: this compress reads schema_version 1, not 2")


def test_schema_version_as_string_is_refused(cli, write_recipe):
    path = write_recipe(variant(("schema_version: 1", 'schema_version: "1"')))
    fails(cli("validate", path),
          f"error: {path}:1: schema_version: this compress reads schema_version 1, not '1'")


def test_schema_version_is_required(cli, write_recipe):
    path = write_recipe(variant(("schema_version: 1\n", "")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:1: schema_version: required key is missing")


def test_schema_version_is_checked_before_the_structure(cli, write_recipe):
    # A future recipe may use keys this version does not know: the version is the useful message.
    path = write_recipe(variant(("schema_version: 1", "schema_version: 2"), ("export: [onnx]", "future: {x: 1}")))
    line = fails(cli("validate", path))
    assert ": schema_version: this compress reads schema_version 1, not 2" in line


def test_bad_recipe_name(cli, write_recipe):
    path = write_recipe(variant(("name: small", 'name: "has space"')))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['name']}: name: string should match pattern")


# 6. Stage plugins -----------------------------------------------------------------------------


def test_stage_that_is_not_installed(cli, write_recipe):
    path = write_recipe(variant(("  - prune:\n      target_macs_ratio: 0.6\n", "  - sparsify: {}\n")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['prune']}: stages[0]: "
                           "no stage plugin named 'sparsify' is installed; installed: ")
    installed = line.split("installed: ")[-1].split(", ")
    assert {"prune", "distill"} <= set(installed)


def test_stage_that_is_not_installed_at_a_later_index(cli, write_recipe):
    path = write_recipe(variant(("quantize:\n", "  - sparsify:\n      amount: 3\nquantize:\n")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:16: stages[2]: no stage plugin named 'sparsify' is installed")


def test_misspelt_stage_name_gets_a_suggestion(cli, write_recipe):
    path = write_recipe(variant(("  - distill:", "  - distil:")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['distill']}: stages[1]: "
                           "no stage plugin named 'distil' is installed (did you mean 'distill'?); installed: ")


def test_unknown_stage_stops_before_later_stages_are_checked(cli, write_recipe):
    path = write_recipe(variant(("  - prune:\n      target_macs_ratio: 0.6\n", "  - sparsify: {}\n"),
                                ("      temperature: 4.0", "      temperature: -1")))
    line = fails(cli("validate", path))
    assert "stages[0]: no stage plugin named 'sparsify'" in line
    assert "temperature" not in line


# 7. --set overrides ---------------------------------------------------------------------------


def test_set_bad_value_names_set_and_path(cli, write_recipe):
    path = write_recipe(BASE)
    line = fails(cli("validate", path, "--set", "stages[1].distill.temperature=-1"))
    assert line.startswith("error: --set: stages[1].distill.temperature: must be > 0")
    assert str(path) not in line  # the bad value came from the command line, not the file
    assert line.endswith("(got -1)")


def test_set_on_quickstart(cli, monkeypatch):
    monkeypatch.chdir(REPO)
    line = fails(cli("validate", "recipes/quickstart.yaml", "--set", "stages[1].distill.temperature=-1"))
    assert "--set" in line and "stages[1].distill.temperature: must be > 0" in line


def test_set_unknown_key_names_set(cli, write_recipe):
    path = write_recipe(BASE)
    fails(cli("validate", path, "--set", "stages[1].distill.tempratur=3"),
          "error: --set: stages[1].distill.tempratur: unknown key 'tempratur' (did you mean 'temperature'?)")


def test_file_errors_outside_the_override_still_point_into_the_file(cli, write_recipe):
    path = write_recipe(variant(("      temperature: 4.0", "      temperature: -1")))
    line = fails(cli("validate", path, "--set", "stages[1].distill.epochs=3"))
    assert line.startswith(f"error: {path}:{LINE['temperature']}: stages[1].distill.temperature: must be > 0")


def test_set_can_fix_a_bad_file_value(cli, write_recipe):
    path = write_recipe(variant(("      temperature: 4.0", "      temperature: -1")))
    result = cli("validate", path, "--set", "stages[1].distill.temperature=2")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("key", ["stages[1].distill.epochs", "stages.1.distill.epochs"])
def test_set_is_applied_with_both_index_syntaxes(write_recipe, key):
    path = write_recipe(BASE)
    loaded = load_recipe(path, [f"{key}=7"])
    assert loaded.stages[1].name == "distill"
    assert loaded.stages[1].config.epochs == 7
    assert loaded.raw["stages"][1]["distill"]["epochs"] == 7
    assert loaded.stages[0].config.target_macs_ratio == 0.6  # the rest is untouched
    assert path.read_text() == BASE  # the file itself is never rewritten


def test_set_name(write_recipe):
    path = write_recipe(BASE)
    assert load_recipe(path, ["name=other"]).recipe.name == "other"
    assert load_recipe(path).recipe.name == "small"


def test_set_name_through_cli(cli, write_recipe):
    path = write_recipe(BASE)
    result = cli("validate", path, "--set", "name=other")
    assert result.exit_code == 0, result.stderr
    line = fails(cli("validate", path, "--set", "name=bad name"))
    assert line.startswith("error: --set: name: string should match pattern")


def test_set_later_override_wins(write_recipe):
    path = write_recipe(BASE)
    loaded = load_recipe(path, ["stages[1].distill.epochs=7", "stages.1.distill.epochs=9"])
    assert loaded.stages[1].config.epochs == 9


def test_set_values_are_read_as_yaml(write_recipe):
    path = write_recipe(BASE)
    loaded = load_recipe(path, ["stages[0].prune.ignore=[fc, 'conv.*']", "stages[1].distill.alpha=0.25",
                                "model.input.shape=[2, 1, 8, 8]", "quantize.per_channel=false"])
    assert loaded.stages[0].config.ignore == ["fc", "conv.*"]
    assert loaded.stages[1].config.alpha == 0.25
    assert loaded.recipe.model.input.shape == [2, 1, 8, 8]
    assert loaded.recipe.quantize is not None and loaded.recipe.quantize.per_channel is False


def test_set_creates_missing_sections(write_recipe):
    path = write_recipe(BASE)  # BASE has no `data` section
    loaded = load_recipe(path, ["data.seed=5"])
    assert loaded.recipe.data.seed == 5


def test_set_replaces_a_whole_list_item(write_recipe):
    path = write_recipe(BASE)
    loaded = load_recipe(path, ["stages[0]={prune: {pruning_ratio: 0.3}}"])
    assert loaded.stages[0].config.pruning_ratio == 0.3
    assert loaded.stages[0].config.target_macs_ratio is None


@pytest.mark.parametrize("expr", ["foo", "stages[1].distill.epochs"])
def test_set_without_equals_sign(cli, write_recipe, expr):
    path = write_recipe(BASE)
    fails(cli("validate", path, "--set", expr), f"error: --set '{expr}': expected key.path=value")


@pytest.mark.parametrize(("expr", "message"), [
    ("stages[5].distill.epochs=1", "stages[5] does not exist"),
    ("stages.5.distill.epochs=1", "stages[5] does not exist"),
    ("stages[2]={distill: {}}", "stages[2] does not exist"),
    ("name.first=x", "name is not a mapping"),
    ("stages[1]..epochs=1", "cannot read key path 'stages[1]..epochs'"),
    ("=3", "cannot read key path ''"),
    ("stages[-1].distill.epochs=1", "cannot read key path 'stages[-1].distill.epochs'"),
])
def test_set_on_a_path_that_cannot_be_set(cli, write_recipe, expr, message):
    path = write_recipe(BASE)
    fails(cli("validate", path, "--set", expr), f"error: --set '{expr}': {message}")


def test_set_missing_index_through_load_recipe(write_recipe):
    path = write_recipe(BASE)
    with pytest.raises(InputError) as info:
        load_recipe(path, ["stages[3].distill.epochs=1"])
    assert info.value.exit_code == 2
    assert "stages[3] does not exist" in str(info.value)


# 8. JSON Schema -------------------------------------------------------------------------------


def _schema(cli, *args: str) -> dict[str, Any]:
    result = cli("schema", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_recipe_schema(cli):
    schema = _schema(cli)
    assert schema["title"] == "compress recipe"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"schema_version", "name", "model", "stages", "quantize", "export", "verify"} <= set(schema["properties"])
    assert {"schema_version", "name", "model"} <= set(schema["required"])
    variants = schema["properties"]["stages"]["items"]["oneOf"]
    by_name = {next(iter(v["properties"])): v for v in variants}
    assert {"prune", "distill"} <= set(by_name)
    for name, variant_schema in by_name.items():
        assert variant_schema["required"] == [name]
        assert variant_schema["additionalProperties"] is False
    def resolve(node: dict) -> dict:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else node

    assert "temperature" in resolve(by_name["distill"]["properties"]["distill"])["properties"]
    assert "target_macs_ratio" in resolve(by_name["prune"]["properties"]["prune"])["properties"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_recipe_schema_refs_all_resolve(cli):
    # Editors resolve `#/...` against the whole document: a stage's own `$defs` nested under
    # `properties.stages` are not where `#/$defs/Name` points.
    schema = _schema(cli)
    refs = _refs(schema)
    assert refs
    unresolved = []
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                unresolved.append(ref)
                break
            node = node[part]
    assert unresolved == []


def test_results_schema(cli):
    schema = _schema(cli, "--results")
    assert "measurements" in schema["properties"]
    assert "artifacts" in schema["properties"]
    assert "stages" in schema["properties"]
    assert schema["properties"] != _schema(cli)["properties"]


# 9. Model section -----------------------------------------------------------------------------


def test_model_with_both_factory_and_file(cli, write_recipe):
    path = write_recipe(variant(("  kwargs:\n    width: 8\n", "  file: model.pt\n")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['model']}: model: give exactly one of 'factory' (module:attr), 'huggingface' (a local "
          "folder) or 'file'")


def test_model_with_neither_factory_nor_file(cli, write_recipe):
    path = write_recipe(variant(("  factory: compress.zoo.digits:DigitsCNN\n  kwargs:\n    width: 8\n", "")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['model']}: model: give exactly one of 'factory' (module:attr), 'huggingface' (a local "
          "folder) or 'file'")


def test_model_file_with_kwargs(cli, write_recipe):
    path = write_recipe(variant(("  factory: compress.zoo.digits:DigitsCNN\n", "  file: model.pt\n")))
    fails(cli("validate", path),
          f"error: {path}:{LINE['model']}: model: 'weights' and 'kwargs' go with 'factory', not with 'file'")


@pytest.mark.parametrize("factory", ["not a factory", "compress.zoo.digits", "compress.zoo.digits:", ":Digits"])
def test_bad_factory_string(cli, write_recipe, factory):
    path = write_recipe(variant(("  factory: compress.zoo.digits:DigitsCNN", f'  factory: "{factory}"')))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['factory']}: model.factory: string should match pattern ")
    assert line.endswith(f"(got {factory!r})")


def test_model_is_required(cli, write_recipe):
    path = write_recipe(variant(("model:\n  factory: compress.zoo.digits:DigitsCNN\n  kwargs:\n    width: 8\n"
                                 "  input:\n    shape: [1, 1, 8, 8]\n", "")))
    line = fails(cli("validate", path))
    assert ": model: required key is missing" in line


def test_model_input_is_required(cli, write_recipe):
    path = write_recipe(variant(("  input:\n    shape: [1, 1, 8, 8]\n", "")))
    fails(cli("validate", path), f"error: {path}:{LINE['model']}: model: give exactly one of 'input' (one input) or "
          "'inputs' (a list, one per model input)")


# 10. prune targets ----------------------------------------------------------------------------

PRUNE_TARGET = "stages[0].prune: give exactly one of pruning_ratio, target_macs_ratio, target_params_ratio"


def test_prune_without_a_target(cli, write_recipe):
    path = write_recipe(variant(("      target_macs_ratio: 0.6", "      importance: l1")))
    fails(cli("validate", path), f"error: {path}:{LINE['prune']}: {PRUNE_TARGET}")


def test_prune_with_empty_config(cli, write_recipe):
    path = write_recipe(variant(("  - prune:\n      target_macs_ratio: 0.6\n", "  - prune: {}\n")))
    fails(cli("validate", path), f"error: {path}:{LINE['prune']}: {PRUNE_TARGET}")


@pytest.mark.parametrize("targets", [
    "pruning_ratio: 0.3\n      target_macs_ratio: 0.6",
    "target_macs_ratio: 0.6\n      target_params_ratio: 0.5",
    "pruning_ratio: 0.3\n      target_params_ratio: 0.5",
    "pruning_ratio: 0.3\n      target_macs_ratio: 0.6\n      target_params_ratio: 0.5",
])
def test_prune_with_more_than_one_target(cli, write_recipe, targets):
    path = write_recipe(variant(("      target_macs_ratio: 0.6", f"      {targets}")))
    fails(cli("validate", path), f"error: {path}:{LINE['prune']}: {PRUNE_TARGET}")


@pytest.mark.parametrize("target", ["pruning_ratio", "target_macs_ratio", "target_params_ratio"])
def test_prune_with_exactly_one_target(write_recipe, target):
    path = write_recipe(variant(("      target_macs_ratio: 0.6", f"      {target}: 0.4")))
    config = load_recipe(path).stages[0].config
    assert getattr(config, target) == 0.4


# 11. quantize needs an export ----------------------------------------------------------------------


def test_quantize_without_onnx_export(cli, write_recipe):
    path = write_recipe(variant(("export: [onnx]", "export: []")))
    line = fails(cli("validate", path))
    assert re.fullmatch(rf"error: {re.escape(str(path))}:\d+: quantize needs at least one format in export", line), line


def test_no_quantize_and_no_export_is_valid(cli, write_recipe):
    path = write_recipe(variant(("quantize:\n  precision: int8\n", ""), ("export: [onnx]", "export: []")))
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{path}: valid (prune, distill; export )\n"


def test_export_format_that_is_not_installed(cli, write_recipe):
    path = write_recipe(variant(("export: [onnx]", "export: [onnx, coreml]")))
    line = fails(cli("validate", path))
    assert line.startswith(f"error: {path}:{LINE['export']}: export[1]: "
                           "no format plugin named 'coreml' is installed; installed: onnx, openvino, tflite, torch")


def test_unsupported_verify_target(cli, write_recipe):
    path = write_recipe(BASE + "verify:\n  targets: [local, jetson]\n")
    fails(cli("validate", path),
          f"error: {path}:20: verify.targets[1]: no target plugin named 'jetson' is installed; "
          "installed: adb, cuda, local, ssh")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_recipe_validates(cli, recipe):
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
