"""equiformer: SE(3)/E(3)-equivariant graph attention networks for molecules and proteins."""
from .config import EquiformerConfig
from .model import Equiformer, Return
from .version import __version__

__all__ = ["Equiformer", "EquiformerConfig", "Return", "__version__"]
