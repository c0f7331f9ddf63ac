"""Compile bench/_baseline.c (module bench._baseline) in place: `make setup` runs this.

The C loop is the benchmark's yardstick, not part of the product, so setup.py (which
builds what users install) leaves it out. It includes the header setup.py generates from
engine/bits.py and engine/isa.py, so the two always agree on every bit field.
"""

from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    setup(
        name="ptviz-bench",
        script_args=["-q", "build_ext", "--inplace"],
        ext_modules=[
            Extension(
                "bench._baseline",
                ["bench/_baseline.c"],
                include_dirs=["engine"],
                depends=["engine/_bits.h"],
                extra_compile_args=["-O3"],
            )
        ],
    )
