"""Install with `pip install -e .`; Paddle itself comes from requirements/{cpu,gpu}.txt (see README),
so an existing Paddle build (CPU or GPU) is never replaced."""
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "passl_mixer", "__init__.py"), encoding="utf-8") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="passl-mixer",
    version=version,
    description="MLP-Mixer for PaddlePaddle: registries, YAML configs, training, export",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["passl_mixer", "passl_mixer.*"]),
    # the fused CPU training kernels are compiled from source on first use
    package_data={"passl_mixer": ["cpu_kernels.cc"]},
    python_requires=">=3.9,<3.13",
    install_requires=[
        "numpy>=1.21",
        "PyYAML>=5.4",
        "Pillow>=9.0",
        "visualdl>=2.5",
        "pydantic>=2",
    ],
    extras_require={
        "safetensors": ["safetensors>=0.4"],
        "onnx": ["paddle2onnx>=1.2", "onnxruntime>=1.16"],
        # one more engine for tools/benchmark.py --mode infer (reads the ONNX export)
        "openvino": ["paddle2onnx>=1.2", "openvino>=2024.0"],
        "test": ["pytest>=7", "import-linter>=2.1", "safetensors>=0.4", "scipy>=1.9"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
