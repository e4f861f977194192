"""The compiled part of eventml (everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "eventml._kernels",
            ["src/eventml/_kernels.c"],
            # no fused multiply-add: sums must round like numpy's, step by step
            extra_compile_args=["-O3", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
