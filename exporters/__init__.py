"""Deployment formats: one folder, one plugin each (`compress.formats` entry points).

`<format>/__init__.py` holds the Format plugin (what the format is, cheap to import);
`export.py` makes an fp32 artifact from a torch model, `quantize.py` its int8 artifact with the
format's own quantizer, `inspect.py` reads an artifact back for what stayed in float. A format
imports from the core only compress.contracts and compress.errors (an import-linter contract in
pyproject.toml checks it). Installed, this folder is the package compress.exporters.
"""
