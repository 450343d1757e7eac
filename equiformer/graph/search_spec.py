"""What a neighbour search looks for, as one value the search functions hand down to each other."""
from __future__ import annotations

from dataclasses import dataclass

INF = float("inf")  # no limit: every neighbour, any distance, no cap


@dataclass(frozen=True)
class NeighborSearch:
    """Up to ``num_neighbors`` nearest other real nodes within ``valid_radius`` (inclusive) of
    every receiver; ``INF`` lifts either limit.

    ``chunk_elements``: about how many distances one step of a search holds at once.  It bounds
    memory only: every chunking gives the same edges.

    The pairs a search must not pick (adjacency edges already present) are not part of the
    specification: they are tensors in the ids of one particular layout, passed next to it, and
    renumbered whenever the search moves nodes (see ``knn.grouped_search``).
    """

    num_neighbors: float
    valid_radius: float
    chunk_elements: int = 1 << 23
