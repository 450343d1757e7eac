"""Interatomic potentials: energy, forces and stress of molecules and periodic crystals (ASE units).

The network stays chemistry-free; this subpackage turns structures into the graph it takes.
ase and vesin are optional (``pip install "equiformer[atomistic]"``) and imported only on use.
"""
from .neighbors import (
    CheckedStructure,
    NeighborGraph,
    batch_radius_graph,
    check_structure,
    radius_graph,
)
from .potential import Potential

# EquiformerCalculator is importable by name but kept out of __all__: a star import would
# otherwise need ase.
__all__ = [
    "CheckedStructure",
    "NeighborGraph",
    "Potential",
    "batch_radius_graph",
    "check_structure",
    "radius_graph",
]


def __getattr__(name: str) -> type:
    # The calculator subclasses ase's Calculator: import it (and ase) only when asked for, so
    # that this package works without ase; without ase this raises an ImportError with the fix.
    if name == "EquiformerCalculator":
        from .calculator import EquiformerCalculator

        return EquiformerCalculator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
