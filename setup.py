"""Packages for setuptools (the project's metadata is in pyproject.toml).

The repository keeps exporters/ and runtimes/ beside compress/, and the wheel installs them as
compress.exporters and compress.runtimes: one top-level import package. Listing the packages here
means a new format's folder is included as it is, with no edit to any list.
"""

from setuptools import find_packages, setup

MAPPED = {"compress.exporters": "exporters", "compress.runtimes": "runtimes"}

packages = find_packages(include=["compress", "compress.*"])
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"compress": "compress", **MAPPED})
