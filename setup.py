"""Everything about the package is in pyproject.toml except its package list, which needs code:
setuptools' automatic discovery (``datagen`` and every subpackage) plus the data packages that
pyproject.toml's ``package-dir`` maps onto top-level folders (layout presets, vector libraries,
example recipes), which discovery cannot see and a static list would have to repeat."""

from setuptools import find_packages, setup

DATA_PACKAGES = ["datagen._data.layouts", "datagen._data.vector_libraries", "datagen._data.recipes"]

setup(packages=find_packages(include=["datagen", "datagen.*"]) + DATA_PACKAGES)
