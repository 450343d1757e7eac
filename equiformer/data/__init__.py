"""Protein backbone data: parsing, the embedded default set, splits, batching and PDB output.

Importing this package loads neither gemmi nor matplotlib; gemmi is imported only when a
PDB/mmCIF file is read.
"""

from .backbone import (
    AMINO_ACIDS,
    BACKBONE_ATOMS,
    MAX_PEPTIDE_BOND,
    Backbone,
    chain_breaks,
    residue_index,
)
from .batching import NUM_BACKBONE_TOKENS, BackboneBatch, collate
from .embedded import load_embedded
from .pdb import load_structure_dir, read_structure
from .pdb_writer import backbone_to_pdb, write_pdb
from .sidechainnet import load_sidechainnet
from .splits import split_by_entry

__all__ = [
    "AMINO_ACIDS",
    "BACKBONE_ATOMS",
    "MAX_PEPTIDE_BOND",
    "NUM_BACKBONE_TOKENS",
    "Backbone",
    "BackboneBatch",
    "backbone_to_pdb",
    "chain_breaks",
    "collate",
    "load_embedded",
    "load_sidechainnet",
    "load_structure_dir",
    "read_structure",
    "residue_index",
    "split_by_entry",
    "write_pdb",
]
