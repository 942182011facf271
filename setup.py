"""The one compiled part: the masking walk's inner loop (replay/privacy/_native_walk.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install succeeds and the same walk runs in Python, several times slower (``replay serve``
prints which one runs).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "replay.privacy._native_walk",
            ["replay/privacy/_native_walk.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
