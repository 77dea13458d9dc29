"""The registry: missing optional libraries are named with their install hint."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from compress import registry
from compress.errors import InputError


class NeedsAbsentLibrary:
    """A runtime backend that meets its contract but needs a library that is not installed."""

    name = "absent"
    requires = ("numpy", "surely_not_an_installed_module_42")
    install_hint = "pip install 'edge-compress[absent]'"

    def run(self, feeds):
        return []

    def input_specs(self):
        return []


class HalfAFormat:
    """A format plugin without quantize, inspect and check_file."""

    name, runtimes, suffixes, loads_code = "half", ("onnxruntime",), (".half",), False
    libraries, quantize_libraries, quantizer, quantize_modes, QuantizeOptions, layer_int8 = (), (), "", {}, None, {}

    def check_quantize(self, config):
        return []

    def export(self, request):
        raise NotImplementedError


def test_missing_requirements_are_found_without_importing():
    assert registry.missing_requirements(NeedsAbsentLibrary) == ["surely_not_an_installed_module_42"]


def test_require_names_the_missing_library_and_the_install_hint(monkeypatch):
    point = EntryPoint("absent", f"{__name__}:NeedsAbsentLibrary", "compress.runtimes")
    monkeypatch.setitem(registry._entry_points("compress.runtimes"), "absent", point)
    with pytest.raises(InputError) as caught:
        registry.require("compress.runtimes", "absent", file="r.yaml", line=3, field="verify.runtimes[0]")
    message = str(caught.value)
    assert message.startswith("r.yaml:3: verify.runtimes[0]: runtime 'absent' needs surely_not_an_installed_module_42")
    assert "pip install 'edge-compress[absent]'" in message
    rows = {row.name: row for row in registry.inventory() if row.group == "compress.runtimes"}
    assert rows["absent"].status == "missing: surely_not_an_installed_module_42"
    assert rows["onnxruntime"].status == "ok"


def test_unknown_plugin_suggests_the_nearest_name():
    expected = r"no runtime plugin named 'onnxruntim' is installed \(did you mean 'onnxruntime'\?\)"
    with pytest.raises(InputError, match=expected):
        registry.load("compress.runtimes", "onnxruntim")


def test_a_plugin_that_misses_part_of_its_contract_is_a_one_line_error(monkeypatch):
    point = EntryPoint("half", f"{__name__}:HalfAFormat", "compress.formats")
    monkeypatch.setitem(registry._entry_points("compress.formats"), "half", point)
    with pytest.raises(InputError) as caught:
        registry.load("compress.formats", "half", file="r.yaml", line=7, field="export[0]")
    assert str(caught.value) == (f"r.yaml:7: export[0]: format plugin 'half' ({__name__}:HalfAFormat) does not "
                                 "meet the format contract: it has no quantize, inspect, check_file "
                                 "(see compress.contracts)")
    rows = {row.name: row for row in registry.inventory() if row.group == "compress.formats"}
    assert rows["half"].status == "broken: no quantize, inspect, check_file"
    assert rows["onnx"].status == "ok"


@pytest.mark.parametrize(("group", "kind"), [(g, k) for g, k in registry.GROUPS.items()])
def test_every_builtin_plugin_meets_its_contract(group, kind):
    from compress.contracts import missing_members

    for name in registry.names(group):
        assert missing_members(kind, registry.load(group, name)) == [], (group, name)
