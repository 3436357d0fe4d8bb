"""Build script: the Python packages (``kernels/`` ships as ``pycam_fast.kernels``)."""

from setuptools import find_packages, setup

packages = find_packages(include=["pycam_fast", "pycam_fast.*"]) + ["pycam_fast.kernels"]

setup(
    packages=packages,
    package_dir={"pycam_fast.kernels": "kernels"},
    package_data={"pycam_fast": ["demo/*.pt", "demo/*.json"]},
)
