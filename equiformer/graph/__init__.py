"""Neighbour search and edge lists: k nearest neighbours within a radius, adjacency, hop counts.

Everything here returns edge lists (``dst`` receives from ``src``); no ``n x n`` feature tensor is
ever made.  The nearest-neighbour search works on row chunks, so its memory is
O(chunk * n) rather than O(n^2), and on groups of graphs of similar size, so a batch is never
searched as if every graph were as large as the largest; adjacency is turned into an edge list
once and stays sparse.
Selection is discrete and carries no gradient: distances are recomputed with autograd later.

Modules, lowest first: ``search_spec`` (what a search looks for), ``indexing`` (node and pair
ids), ``ranking`` (the shared distance formula and tie rule), ``adjacency`` (bonds, hops, caps),
``exhaustive`` and ``grid`` (the two searches), ``knn`` (which search, padded or grouped by
size), ``edges`` (``build_graph``).  Nothing here depends on ``equiformer.nn``.
"""
from .adjacency import adjacency_pairs, cap_neighbors, expand_hops
from .edges import Graph, build_graph
from .exhaustive import brute_knn_edges
from .grid import grid_knn_edges
from .indexing import lookup_pairs, pair_key, positions_in_graphs
from .knn import knn_edges, packed_knn_edges, size_groups
from .search_spec import INF, NeighborSearch

__all__ = [
    "INF",
    "Graph",
    "NeighborSearch",
    "adjacency_pairs",
    "brute_knn_edges",
    "build_graph",
    "cap_neighbors",
    "expand_hops",
    "grid_knn_edges",
    "knn_edges",
    "lookup_pairs",
    "packed_knn_edges",
    "pair_key",
    "positions_in_graphs",
    "size_groups",
]
