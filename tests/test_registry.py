"""The registry: missing optional libraries are named with their install hint."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from compress import registry
from compress.errors import InputError


class NeedsAbsentLibrary:
    requires = ("numpy", "surely_not_an_installed_module_42")
    install_hint = "pip install 'edge-compress[absent]'"


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
