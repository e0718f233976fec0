"""sami-rt: SAMI training (train/), export (export/) and the runtime package ``sami_rt``.

A wheel (``pip install .``) holds ``sami_rt`` (the runtime, no torch) and ``sami_reference`` (the model in
PyTorch, used only where torch is installed). ``train/`` and ``export/`` run from a source checkout: an
editable install (``pip install -e .``) maps them too, so that ``python train/run.py`` and ``python
export/run.py`` import them from any directory; a wheel never puts top-level ``train`` or ``export`` modules
into site-packages, where they could shadow or be shadowed by another package of that name.
"""

import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError:  # pybind11 comes from pyproject.toml's build requirements; without it: numpy loop only
    Pybind11Extension = build_ext = None

version = re.search(r'__version__ = "([^"]+)"', Path("sami_rt/_version.py").read_text()).group(1)

# setuptools builds an editable install through its editable_wheel command (PEP 660)
CHECKOUT_ONLY = ["train", "export"] if "editable_wheel" in sys.argv else []

ext_modules, cmdclass = [], {}
if Pybind11Extension is not None:
    ext_modules = [
        Pybind11Extension(
            "sami_rt.sampling._sampler",
            ["cpp_ext/sampler.cpp"],
            include_dirs=["cpp_ext"],
            cxx_std=17,
            # no fused multiply-add contraction: the update must round exactly like the numpy twin
            extra_compile_args=["-O3", "-ffp-contract=off"],
        )
    ]
    cmdclass = {"build_ext": build_ext}

setup(
    name="sami-rt",
    version=version,
    description="SAMI (score-based autoencoder for multiscale inference): training, export and a light runtime",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sami_rt", "sami_rt.*", "sami_reference", *CHECKOUT_ONLY]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["numpy>=1.24", "onnxruntime>=1.18", "opencv-python-headless>=4.8", "click>=8.0"],
    package_data={"sami_rt": ["models/*/*"]},
    entry_points={"console_scripts": ["sami-rt=sami_rt.cli.main:main"]},
    extras_require={
        # torch stays a range here; constraints.txt pins the CPU build used by CI and the README.
        "train": ["torch>=2.1", "tqdm>=4.60", "scikit-learn>=1.2", "matplotlib>=3.6", "pillow>=9.0"],
        "export": ["onnx>=1.16", "onnxscript>=0.3"],
        "plot": ["matplotlib>=3.6"],
        "trt": ["tensorrt>=10", "cuda-python>=12"],
        # --device openvino (OpenVINO on the CPU, float32 and bfloat16); constraints.txt pins the tested release
        "openvino": ["openvino>=2025.1"],
        # encode-corpus --ray (Ray Data) and sami-rt serve (Ray Serve); constraints.txt pins the tested release
        "ray": ["ray[data,serve]>=2.40,<2.64"],
        "dev": ["pytest>=7.0", "pytest-xdist>=3.0", "hypothesis>=6.0", "diffusers>=0.25"],
    },
)
