"""The engine's front door: a scenario in, a machine (Cython core or Python twin) out."""

from __future__ import annotations

from .scenario import Scenario
from .spec import MachineSpec, build_spec
from .twin import EngineError
from .twin import Machine as TwinMachine

ENGINES = ("cython", "python")


def machine_class(engine: str):
    if engine == "python":
        return TwinMachine
    if engine == "cython":
        try:
            from ._core import Machine
        except ImportError as exc:  # the extension was not built
            raise EngineError(
                "the Cython core is not built (engine/_core.pyx): run `pip install -e .` "
                f"or use --engine python ({exc})"
            ) from exc
        return Machine
    raise EngineError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


def new_machine(spec: MachineSpec, engine: str = "cython", take_image: bool = False):
    """take_image: the machine's table memory may be the spec's image itself (whoever
    asks never reads spec.mem again, nor runs another machine of this spec)."""
    return machine_class(engine)(spec, take_image=take_image)


def load(scenario: Scenario, engine: str = "cython"):
    spec = build_spec(scenario)
    return spec, new_machine(spec, engine)
