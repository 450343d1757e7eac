"""equiformer: SE(3)/E(3)-equivariant graph attention networks for molecules and proteins."""
from .model import Equiformer, Return
from .version import __version__

__all__ = ["Equiformer", "Return", "__version__"]
