"""The compiled parts: the masking walk's inner loop (replay/privacy/_native_walk.c), taking a
decoded upload out of the garbage collector's sight (replay/ingest/_decoded_tree.c) and packing
the JSON uploads of projects that do not mask on the server (replay/ingest/_json_to_msgpack.c).

Everything else is in pyproject.toml. Both are optional: without a C compiler the install
succeeds and the same work runs in Python, slower (``replay serve`` says so at startup).
"""
from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension("replay.privacy._native_walk", ["replay/privacy/_native_walk.c"], extra_compile_args=FLAGS,
                  depends=["replay/privacy/_mirror_table.h"],
                  optional=True),
        Extension("replay.ingest._decoded_tree", ["replay/ingest/_decoded_tree.c"], extra_compile_args=FLAGS,
                  optional=True),
        Extension("replay.ingest._json_to_msgpack", ["replay/ingest/_json_to_msgpack.c"], extra_compile_args=FLAGS,
                  optional=True),
    ]
)
