"""Periodic neighbour lists and structure checks for atomistic inputs (units as ASE: Å).

Edges follow the model's convention: a pair ``(i, j)`` means "``i`` receives from ``j``" and its
edge vector is ``pos[j] - pos[i] + S @ cell`` with ``S`` the integer image counts, the same sign
convention as ``ase.neighborlist.neighbor_list("ijS", ...)`` and vesin.  A pair is kept when its
length is strictly below the cutoff (ASE and vesin both use ``<``).

The search runs in vesin on float64 CPU copies and carries no gradient; gradients reach positions
and cell later, through ``coors[j] - coors[i] + shifts`` with ``shifts = S @ cell`` in torch.
ase and vesin are optional: they are imported inside the functions that need them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["CheckedStructure", "NeighborGraph", "batch_radius_graph", "check_structure", "radius_graph"]

_INSTALL_HINT = 'pip install "equiformer[atomistic]"'
# A periodic cell vector shorter than this (Å) counts as zero: its images would be endless.
_ZERO_LENGTH = 1e-8
# Periodic cell vectors whose spanned volume (area, for two) over the product of their lengths
# falls below this are treated as linearly dependent: the neighbour search would never end.
_SINGULAR_TOL = 1e-6

PbcLike = Tensor | np.ndarray | Sequence[bool] | bool


class NeighborGraph(NamedTuple):
    """Edges of a batch of structures, in global node ids, ready for ``forward_packed``."""

    pairs: Tensor  # (2, E) long: (receiver i, sender j)
    shifts: Tensor  # (E, 3) Cartesian image offsets S @ cell[g], differentiable w.r.t. the cell
    shift_ints: Tensor  # (E, 3) long integer image counts S
    edge_graph: Tensor  # (E,) long structure id of every edge (for per-structure virials)


class CheckedStructure(NamedTuple):
    """``check_structure``'s inputs normalised: one entry per structure."""

    graph_index: Tensor  # (N,) long structure id of every atom
    cell: Tensor | None  # (G, 3, 3) lattice vectors as rows, or None (no cell given)
    pbc: Tensor  # (G, 3) bool periodicity per cell axis
    num_structures: int  # G


def _require_vesin() -> Any:
    try:
        import vesin
    except ImportError as exc:  # optional dependency: say how to get it
        raise ImportError(f"the neighbour list needs vesin, which is not installed: {_INSTALL_HINT}") from exc
    return vesin


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_positions(positions: Any) -> Tensor:
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be a torch.Tensor (N, 3), got {type(positions).__name__}")
    if not positions.is_floating_point():
        raise TypeError(f"positions must be a floating-point tensor (N, 3), got dtype {positions.dtype}")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {_shape(positions)}")
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions must be finite, got NaN or inf")
    return positions


def _check_cutoff(cutoff: Any) -> float:
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.integer, np.floating)):
        raise TypeError(f"cutoff must be a real number (Å), got {type(cutoff).__name__}")
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be positive and finite (Å), got {cutoff}")
    return cutoff


def _check_cell(cell: Any, positions: Tensor) -> Tensor:
    """A floating tensor ``(3, 3)`` or ``(G, 3, 3)`` like positions, returned as ``(G, 3, 3)``."""
    if not isinstance(cell, Tensor):
        raise TypeError(f"cell must be a torch.Tensor (3, 3) or (G, 3, 3), or None, got {type(cell).__name__}")
    if cell.dtype != positions.dtype:
        raise TypeError(f"cell must have the dtype of positions ({positions.dtype}), got {cell.dtype}")
    if cell.device != positions.device:
        raise ValueError(f"cell must be on the device of positions ({positions.device}), got {cell.device}")
    if cell.shape[-2:] != (3, 3) or cell.ndim not in (2, 3):
        raise ValueError(f"cell must have shape (3, 3) or (G, 3, 3) with lattice vectors as rows, got {_shape(cell)}")
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("cell must be finite, got NaN or inf")
    return cell.reshape(-1, 3, 3)  # (G, 3, 3)


def _check_pbc(pbc: PbcLike | None, has_cell: bool, device: torch.device) -> Tensor:
    """``pbc`` as a bool tensor ``(3,)`` or ``(G, 3)``; None means periodic iff a cell is given."""
    if pbc is None:
        return torch.full((3,), has_cell, dtype=torch.bool, device=device)  # (3,)
    if isinstance(pbc, (bool, np.bool_)):
        pbc = [bool(pbc)] * 3
    try:
        pbc_t = pbc.to(device) if isinstance(pbc, Tensor) else torch.as_tensor(np.asarray(pbc), device=device)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"pbc must be booleans, shape (3,) or (G, 3), got {pbc!r}") from exc
    if pbc_t.dtype != torch.bool:
        raise TypeError(f"pbc must hold booleans, shape (3,) or (G, 3), got dtype {pbc_t.dtype}")
    if pbc_t.shape[-1:] != (3,) or pbc_t.ndim not in (1, 2):
        raise ValueError(f"pbc must have shape (3,) or (G, 3), got {_shape(pbc_t)}")
    if bool(pbc_t.any()) and not has_cell:
        raise ValueError("pbc is True on some axis but no cell was given: pass cell (3, 3) or (G, 3, 3)")
    return pbc_t


def _check_periodic_cells(cell: Tensor, pbc: Tensor) -> None:
    """Every periodic axis has a nonzero cell vector, and the periodic vectors of each structure
    are linearly independent (non-periodic vectors are free: ASE's slabs leave them zero)."""
    cell64 = cell.detach().to(torch.float64)  # (G, 3, 3)
    lengths = torch.linalg.vector_norm(cell64, dim=-1)  # (G, 3)
    zero = pbc & (lengths < _ZERO_LENGTH)  # (G, 3)
    if bool(zero.any()):
        g, axis = (int(v) for v in zero.nonzero()[0])
        raise ValueError(
            f"pbc is True on axis {axis} of structure {g} but its cell vector cell[{g}, {axis}] is zero: "
            "give a nonzero lattice vector or set that pbc axis False"
        )
    # Gram matrix of the unit periodic vectors, identity on non-periodic axes: its determinant is
    # (volume or area of the periodic vectors / product of their lengths) ** 2, in [0, 1].
    unit = cell64 / lengths.clamp_min(_ZERO_LENGTH).unsqueeze(-1)  # (G, 3, 3)
    gram = unit @ unit.transpose(-1, -2)  # (G, 3, 3)
    both = pbc.unsqueeze(-1) & pbc.unsqueeze(-2)  # (G, 3, 3) entries between periodic axes
    eye = torch.eye(3, dtype=torch.float64, device=cell.device).expand_as(gram)  # (G, 3, 3)
    gram = torch.where(both, gram, eye)
    rel_volume = torch.linalg.det(gram).clamp_min(0).sqrt()  # (G,)
    singular = (pbc.sum(-1) >= 2) & (rel_volume < _SINGULAR_TOL)  # (G,)
    if bool(singular.any()):
        g = int(singular.nonzero()[0])
        raise ValueError(
            f"cell[{g}] is singular on its periodic axes (pbc {pbc[g].tolist()}): its periodic lattice vectors "
            f"are (nearly) linearly dependent, volume / product of lengths = {float(rel_volume[g]):.3g} "
            f"< {_SINGULAR_TOL}"
        )


def check_structure(
    numbers: Tensor,
    positions: Tensor,
    cell: Tensor | None = None,
    pbc: PbcLike | None = None,
    graph_index: Tensor | None = None,
) -> CheckedStructure:
    """Check a batch of G structures (N atoms in all) and return it normalised.

    ``numbers``: ``(N,)`` integer atomic numbers (which elements are known is the Potential's
    business); ``positions``: ``(N, 3)`` floating, finite, Å, not necessarily inside the cell;
    ``cell``: ``(3, 3)`` (one structure) or ``(G, 3, 3)``, lattice vectors as rows, dtype and
    device of positions, or None (no cell: nothing periodic); ``pbc``: ``(3,)`` (shared by all
    structures) or ``(G, 3)`` booleans, default True on every axis when a cell is given, else
    False; ``graph_index``: ``(N,)`` integer structure ids (default: all atoms in structure 0),
    which must cover ``0..G-1`` with at least one atom each, in any order.

    A periodic axis needs a nonzero cell vector, and a structure's periodic vectors must be
    linearly independent; non-periodic vectors may be anything (zero included).  An isolated atom
    in a big box is valid.  Raises ``TypeError`` for wrong types/dtypes, ``ValueError`` for wrong
    shapes or values, naming the argument.
    """
    if not isinstance(numbers, Tensor):
        raise TypeError(f"numbers must be a torch.Tensor (N,) of atomic numbers, got {type(numbers).__name__}")
    if numbers.is_floating_point() or numbers.is_complex() or numbers.dtype == torch.bool:
        raise TypeError(f"numbers must hold integer atomic numbers, got dtype {numbers.dtype}")
    if numbers.ndim != 1:
        raise ValueError(f"numbers must have shape (N,), got {_shape(numbers)}")
    if numbers.numel() == 0:
        raise ValueError("numbers is empty: a structure needs at least one atom")
    positions = _check_positions(positions)
    n_atoms = numbers.shape[0]
    if positions.shape[0] != n_atoms:
        raise ValueError(f"positions must have shape (N, 3) = {(n_atoms, 3)} like numbers, got {_shape(positions)}")
    device = positions.device
    if numbers.device != device:
        raise ValueError(f"numbers must be on the device of positions ({device}), got {numbers.device}")

    if graph_index is None:
        graph_index = torch.zeros(n_atoms, dtype=torch.long, device=device)  # (N,)
    else:
        if not isinstance(graph_index, Tensor):
            raise TypeError(f"graph_index must be a torch.Tensor (N,) or None, got {type(graph_index).__name__}")
        if graph_index.is_floating_point() or graph_index.is_complex() or graph_index.dtype == torch.bool:
            raise TypeError(f"graph_index must hold integer structure ids, got dtype {graph_index.dtype}")
        if graph_index.shape != (n_atoms,):
            raise ValueError(f"graph_index must have shape (N,) = {(n_atoms,)} like numbers, got {_shape(graph_index)}")
        if graph_index.device != device:
            raise ValueError(f"graph_index must be on the device of positions ({device}), got {graph_index.device}")
        graph_index = graph_index.long()  # (N,)
        if int(graph_index.min()) < 0:
            raise ValueError("graph_index must hold non-negative structure ids")
    counts = torch.bincount(graph_index)  # (G,) atoms per structure
    num_structures = counts.numel()
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"graph_index must cover structure ids 0..{num_structures - 1} with at least one atom each; "
            f"structures {empty[:10]} have no atoms"
        )

    cells = None
    if cell is not None:
        cells = _check_cell(cell, positions)  # (G', 3, 3)
        if cell.ndim == 2 and num_structures != 1:
            raise ValueError(f"cell (3, 3) describes one structure but graph_index has {num_structures}: pass (G, 3, 3)")
        if cells.shape[0] != num_structures:
            raise ValueError(
                f"cell must have shape (G, 3, 3) = {(num_structures, 3, 3)}, one per structure in graph_index, "
                f"got {_shape(cell)}"
            )
    pbc_t = _check_pbc(pbc, cells is not None, device)
    if pbc_t.ndim == 2 and pbc_t.shape[0] != num_structures:
        raise ValueError(f"pbc must have shape (3,) or (G, 3) = {(num_structures, 3)}, got {_shape(pbc_t)}")
    pbc_t = pbc_t.expand(num_structures, 3).contiguous()  # (G, 3)
    if cells is not None:
        _check_periodic_cells(cells, pbc_t)
    return CheckedStructure(graph_index, cells, pbc_t, num_structures)


def _vesin_pairs(
    calculator: Any, points: np.ndarray, box: np.ndarray, periodic: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One structure on float64 numpy arrays -> (i (E,), j (E,), S (E, 3)) int64, sorted by (i, j, S)."""
    if points.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    if not periodic.any():
        box = np.zeros((3, 3))  # vesin ignores the box without pbc; a zero box says so
    # copy=False: views into vesin's buffers, copied at once by astype before the next compute.
    i, j, shifts = calculator.compute(points, box, periodic, quantities="ijS", copy=False)
    i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)  # (E,), (E,), (E, 3)
    # vesin's order is unspecified beyond i: sort by (i, j, S) for a reproducible edge order.
    # One mixed-radix int64 key sorts about twice as fast as np.lexsort on five keys.
    n_points = points.shape[0]
    low = shifts.min(0, initial=0)  # (3,)
    span = shifts.max(0, initial=0) - low + 1  # (3,)
    if float(n_points) ** 2 * float(np.prod(span.astype(np.float64))) < 2.0**62:
        key = i * n_points + j  # (E,)
        for axis in range(3):
            key = key * span[axis] + (shifts[:, axis] - low[axis])
        order = np.argsort(key, kind="stable")  # radix sort on integers
    else:  # the key would overflow: absurdly many images
        order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return i[order], j[order], shifts[order]


def radius_graph(
    positions: Tensor,
    cutoff: float,
    cell: Tensor | None = None,
    pbc: PbcLike | None = None,
) -> tuple[Tensor, Tensor]:
    """All pairs of one structure closer than ``cutoff`` (strictly, as ASE), periodic images included.

    ``positions`` ``(N, 3)`` (Å, need not lie inside the cell), ``cell`` ``(3, 3)`` lattice
    vectors as rows or None, ``pbc`` ``(3,)`` bools (default: all True with a cell, else all
    False).  Returns ``pairs`` ``(2, E)`` long ``(receiver i, sender j)`` and ``shift_ints``
    ``(E, 3)`` long image counts ``S``, with edge vector ``positions[j] - positions[i] + S @ cell``,
    on the device of ``positions``, sorted by ``(i, j, S)``.  Cells shorter than the cutoff give
    several images of a pair, and an atom its own images; never the zero-shift self pair.  No
    gradient flows through the search: compute edge vectors from the returned indices.
    """
    positions = _check_positions(positions)
    cutoff = _check_cutoff(cutoff)
    cells = None
    if cell is not None:
        cells = _check_cell(cell, positions)  # (G, 3, 3)
        if cell.ndim != 2:
            raise ValueError(f"cell must have shape (3, 3) for radius_graph (one structure), got {_shape(cell)}")
    pbc_t = _check_pbc(pbc, cells is not None, positions.device)
    if pbc_t.ndim != 1:
        raise ValueError(f"pbc must have shape (3,) for radius_graph (one structure), got {_shape(pbc_t)}")
    pairs, shift_ints, _, _ = _search(positions, None, cutoff, cells, pbc_t)
    return pairs, shift_ints


def batch_radius_graph(
    positions: Tensor,
    graph_index: Tensor | None,
    cutoff: float,
    cell: Tensor | None = None,
    pbc: PbcLike | None = None,
) -> NeighborGraph:
    """``radius_graph`` for a packed batch: ``positions`` ``(N, 3)``, ``graph_index`` ``(N,)``
    structure ids covering ``0..G-1`` in any order (None: one structure), ``cell`` ``(G, 3, 3)``
    (or ``(3, 3)`` when G = 1) or None, ``pbc`` ``(3,)`` shared or ``(G, 3)``.

    Returns a ``NeighborGraph``: ``pairs`` ``(2, E)`` in global node ids (no edge crosses
    structures), ``shifts`` ``(E, 3)`` = ``S @ cell[g]`` computed in torch from the given ``cell``
    so energies differentiate w.r.t. it (zeros of positions' dtype without a cell),
    ``shift_ints`` ``(E, 3)`` and ``edge_graph`` ``(E,)``.  Edges come grouped by structure, each
    group sorted by ``(i, j, S)``.  Pass ``neighbors=pairs, shifts=shifts`` to ``forward_packed``.
    """
    pairs, shift_ints, edge_graph, cells = _search(positions, graph_index, cutoff, cell, pbc)
    if cells is None:
        shifts = torch.zeros(shift_ints.shape, dtype=positions.dtype, device=positions.device)  # (E, 3)
    elif cells.shape[0] == 1:
        shifts = shift_ints.to(positions.dtype) @ cells[0]  # (E, 3)
    else:
        # S @ cell[g] per edge, in torch so the cell gets gradients (stress).
        shifts = torch.bmm(
            shift_ints.to(positions.dtype).unsqueeze(1),  # (E, 1, 3)
            cells.index_select(0, edge_graph),  # (E, 3, 3)
        ).squeeze(1)  # (E, 3)
    return NeighborGraph(pairs, shifts, shift_ints, edge_graph)


def _search(
    positions: Tensor,
    graph_index: Tensor | None,
    cutoff: float,
    cell: Tensor | None,
    pbc: PbcLike | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Checked inputs -> (pairs (2, E), shift_ints (E, 3), edge_graph (E,), cell (G, 3, 3) or None)."""
    positions = _check_positions(positions)
    cutoff = _check_cutoff(cutoff)
    device = positions.device
    if positions.shape[0] == 0:  # nothing to search; check_structure rejects empty batches
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty.view(2, 0), empty.view(0, 3), empty, None
    numbers = torch.zeros(positions.shape[0], dtype=torch.long, device=device)  # (N,) placeholder
    checked = check_structure(numbers, positions, cell, pbc, graph_index)
    vesin = _require_vesin()
    # One thread: the search is a small part of a step and the machine is shared with torch.
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True, n_threads=1)

    points = positions.detach().to("cpu", torch.float64).numpy()  # (N, 3)
    gids = checked.graph_index.cpu().numpy()  # (N,)
    boxes = (
        checked.cell.detach().to("cpu", torch.float64).numpy()  # (G, 3, 3)
        if checked.cell is not None
        else np.zeros((checked.num_structures, 3, 3))
    )
    periodic = checked.pbc.cpu().numpy()  # (G, 3)
    # Atoms of structure g are order[starts[g]:starts[g+1]], in increasing global id.
    order = np.argsort(gids, kind="stable")  # (N,)
    starts = np.concatenate([[0], np.cumsum(np.bincount(gids, minlength=checked.num_structures))])

    senders, receivers, images, owners = [], [], [], []
    for g in range(checked.num_structures):
        atoms = order[starts[g] : starts[g + 1]]  # (n_g,) global ids
        i, j, s = _vesin_pairs(calculator, points[atoms], boxes[g], periodic[g])
        receivers.append(atoms[i])
        senders.append(atoms[j])
        images.append(s)
        owners.append(np.full(i.shape[0], g, dtype=np.int64))

    pairs = torch.from_numpy(np.stack([np.concatenate(receivers), np.concatenate(senders)])).to(device)  # (2, E)
    shift_ints = torch.from_numpy(np.concatenate(images)).to(device)  # (E, 3)
    edge_graph = torch.from_numpy(np.concatenate(owners)).to(device)  # (E,)
    return pairs, shift_ints, edge_graph, checked.cell
