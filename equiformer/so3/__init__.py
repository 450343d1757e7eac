"""Pure SO(3) math: no parameters, no files, no state beyond in-memory caches of exact constants."""
from .clebsch_gordan import clebsch_gordan
from .edge_rotation import EDGE_AXIS, edge_to_axis_rotation
from .indexing import degree_slice, num_harmonics
from .spherical_harmonics import safe_unit, spherical_harmonics
from .wigner import block_diagonal, permuted_block_diagonal, wigner_D, wigner_D_block_diagonal

__all__ = [
    "EDGE_AXIS",
    "block_diagonal",
    "permuted_block_diagonal",
    "clebsch_gordan",
    "degree_slice",
    "edge_to_axis_rotation",
    "num_harmonics",
    "safe_unit",
    "spherical_harmonics",
    "wigner_D",
    "wigner_D_block_diagonal",
]
