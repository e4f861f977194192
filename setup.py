"""The compiled part of eventml (everything else is in pyproject.toml)."""

import sys

from setuptools import Extension, setup

# gcc and clang: no fused multiply-add, so sums round like numpy's, step by step (MSVC
# does not contract by default; _kernels.c also sets the standard pragma for others)
FLAGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-Wall", "-Wextra"]

setup(
    ext_modules=[
        Extension(
            "eventml._kernels",
            ["src/eventml/_kernels.c"],
            extra_compile_args=[*FLAGS, "-Wno-unused-parameter"] if FLAGS else [],
        )
    ]
)
