"""Periodic neighbour list (vesin) against ASE's reference, and the structure checks."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from equiformer.atomistic import batch_radius_graph, check_structure, radius_graph

try:  # the optional dependencies (CI installs them with .[test]); the checks need neither
    import ase
    import vesin  # noqa: F401
    from ase.neighborlist import neighbor_list
except ImportError:
    ase = None
needs_search = pytest.mark.skipif(ase is None, reason='needs pip install "equiformer[atomistic]"')

Edges = set[tuple[int, int, tuple[int, int, int]]]


def ase_edges(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> Edges:
    atoms = ase.Atoms(positions=positions, cell=cell, pbc=pbc)
    i, j, shifts = neighbor_list("ijS", atoms, cutoff)
    return {(a, b, tuple(s)) for a, b, s in zip(i.tolist(), j.tolist(), shifts.tolist())}


def as_edges(pairs: torch.Tensor, shift_ints: torch.Tensor) -> Edges:
    return {(a, b, tuple(s)) for a, b, s in zip(pairs[0].tolist(), pairs[1].tolist(), shift_ints.tolist())}


def face_distances(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along each axis."""
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)])


def random_structure(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Triclinic cells, some thinner than the cutoff, mixed pbc, atoms outside the cell, and now
    and then a zero vector on a non-periodic axis (ASE's slab idiom)."""
    cutoff = float(rng.uniform(1.0, 3.5))
    while True:  # bounded image counts: no face distance below a third of the cutoff
        lengths = rng.uniform(0.6, 7.0, 3)
        cell = np.diag(lengths) + rng.uniform(-0.4, 0.4, (3, 3)) * lengths[:, None]
        if face_distances(cell).min() > cutoff / 3:
            break
    pbc = rng.random(3) < 0.6
    n_atoms = int(rng.integers(1, 21))
    positions = rng.uniform(-0.6, 1.6, (n_atoms, 3)) @ cell + rng.normal(0.0, 0.3, (n_atoms, 3))
    if not pbc.all() and rng.random() < 0.2:
        cell[rng.choice(np.flatnonzero(~pbc))] = 0.0
    return positions, cell, pbc, cutoff


def check_edges(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    pos_t = torch.tensor(positions, dtype=torch.float64)
    cell_t = torch.tensor(cell, dtype=torch.float64)
    pairs, shift_ints = radius_graph(pos_t, cutoff, cell_t, torch.tensor(pbc))
    assert pairs.dtype == shift_ints.dtype == torch.long
    assert as_edges(pairs, shift_ints) == ase_edges(positions, cell, pbc, cutoff)
    assert len(as_edges(pairs, shift_ints)) == pairs.shape[1]  # no duplicates
    # The sign convention: every edge vector pos[j] - pos[i] + S @ cell is shorter than the cutoff.
    vectors = pos_t[pairs[1]] - pos_t[pairs[0]] + shift_ints.double() @ cell_t  # (E, 3)
    assert bool((vectors.norm(dim=1) < cutoff).all())
    return pairs, shift_ints


@needs_search
@pytest.mark.parametrize("seed", range(5))
def test_matches_ase_on_random_structures(seed: int) -> None:
    rng = np.random.default_rng(1234 + seed)
    for _ in range(50):  # 250 structures over the five seeds
        check_edges(*random_structure(rng))


@needs_search
def test_edges_sorted_by_receiver_sender_shift() -> None:
    rng = np.random.default_rng(7)
    positions, cell, _, _ = random_structure(rng)
    pairs, shift_ints = check_edges(positions, cell, np.array([True, True, True]), 3.0)
    keys = [(a, b, *s) for a, b, s in zip(pairs[0].tolist(), pairs[1].tolist(), shift_ints.tolist())]
    assert keys == sorted(keys)


@needs_search
def test_cutoff_is_strict_like_ase() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    pairs, _ = check_edges(positions, np.zeros((3, 3)), np.zeros(3, dtype=bool), 1.5)
    assert pairs.shape[1] == 0  # a pair exactly at the cutoff is left out, as ASE does
    pairs, _ = check_edges(np.zeros((1, 3)), 2.0 * np.eye(3), np.ones(3, dtype=bool), 2.0)
    assert pairs.shape[1] == 0  # images exactly one lattice constant away: left out too


@needs_search
def test_tilted_periodic_axis_along_long_non_periodic_extent() -> None:
    """The image across a periodic vector with a component along a long non-periodic direction."""
    cell = np.array([[1.0, 0.0, 10.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 10.0], [0.0, 5.0, 50.0], [0.0, 5.0, -50.0]])
    pairs, shift_ints = check_edges(positions, cell, np.array([True, False, False]), 1.5)
    assert as_edges(pairs, shift_ints) == {(0, 1, (-1, 0, 0)), (1, 0, (1, 0, 0))}


@needs_search
def test_isolated_atom_in_big_box_has_no_edges() -> None:
    positions = torch.tensor([[3.0, 4.0, 5.0]], dtype=torch.float64)
    cell = 20.0 * torch.eye(3, dtype=torch.float64)
    pairs, shift_ints = radius_graph(positions, 5.0, cell, [True, True, True])
    assert pairs.shape == (2, 0) and shift_ints.shape == (0, 3)
    check_structure(torch.tensor([8]), positions, cell, [True, True, True])  # valid


@needs_search
def test_one_atom_cell_shorter_than_cutoff_sees_its_images() -> None:
    a, cutoff = 1.5, 3.2
    positions = torch.tensor([[0.2, 0.3, 0.1]], dtype=torch.float64)
    pairs, shift_ints = radius_graph(positions, cutoff, a * torch.eye(3, dtype=torch.float64), None)
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expected = {(0, 0, tuple(s)) for s in grid.tolist() if 0 < a * np.linalg.norm(s) < cutoff}
    assert as_edges(pairs, shift_ints) == expected
    assert bool(shift_ints.abs().sum(1).gt(0).all())  # never the zero-shift self pair
    assert len(expected) > 26  # reaches past the nearest images


def brute_force_edges(positions: np.ndarray, cutoff: float) -> Edges:
    n = len(positions)
    return {
        (i, j, (0, 0, 0))
        for i in range(n)
        for j in range(n)
        if i != j and np.linalg.norm(positions[j] - positions[i]) < cutoff
    }


@needs_search
def test_non_periodic_molecule_equals_brute_force() -> None:
    positions = np.random.default_rng(3).normal(0.0, 2.0, (30, 3)) + 100.0  # far from any box
    pos_t = torch.tensor(positions)
    expected = brute_force_edges(positions, 2.5)
    assert len(expected) > 0
    assert as_edges(*radius_graph(pos_t, 2.5)) == expected  # no cell
    cell = 3.0 * torch.eye(3, dtype=torch.float64)  # a cell without pbc changes nothing
    assert as_edges(*radius_graph(pos_t, 2.5, cell, [False, False, False])) == expected


def three_structures() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, float]:
    """A crystal shorter than the cutoff, a molecule (pbc off) and a slab, as (positions list, cell, pbc, cutoff)."""
    rng = np.random.default_rng(11)
    crystal = torch.tensor(rng.uniform(0, 2.2, (2, 3)))
    molecule = torch.tensor(rng.normal(0, 1.0, (5, 3)))
    slab = torch.tensor(rng.uniform(0, 3.0, (4, 3)))
    cell = torch.stack(
        [
            torch.tensor([[2.2, 0.0, 0.0], [0.4, 2.0, 0.0], [0.3, 0.2, 2.4]]),
            torch.zeros(3, 3),
            torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.1, 0.0], [0.0, 0.0, 0.0]]),
        ]
    ).double()
    pbc = torch.tensor([[True, True, True], [False, False, False], [True, True, False]])
    return [crystal, molecule, slab], cell, pbc, 2.6


@needs_search
@pytest.mark.parametrize("interleave", [False, True])
def test_batch_offsets_node_ids_per_structure(interleave: bool) -> None:
    parts, cell, pbc, cutoff = three_structures()
    graph_index = torch.cat([torch.full((len(p),), g) for g, p in enumerate(parts)])  # (N,)
    positions = torch.cat(parts)  # (N, 3)
    if interleave:  # structure ids in any order: atoms keep their global ids
        perm = torch.randperm(len(positions), generator=torch.Generator().manual_seed(0))
        positions, graph_index = positions[perm], graph_index[perm]
    graph = batch_radius_graph(positions, graph_index, cutoff, cell, pbc)
    expected = set()
    for g in range(3):
        atoms = torch.nonzero(graph_index == g).flatten()  # (n_g,) global ids
        pairs, shift_ints = radius_graph(positions[atoms], cutoff, cell[g], pbc[g])
        expected |= as_edges(atoms[pairs], shift_ints)
    assert as_edges(graph.pairs, graph.shift_ints) == expected
    assert bool((graph_index[graph.pairs[0]] == graph.edge_graph).all())
    assert bool((graph_index[graph.pairs[1]] == graph.edge_graph).all())
    assert torch.equal(graph.edge_graph, graph.edge_graph.sort().values)  # grouped by structure
    assert set(graph.edge_graph.tolist()) == {0, 1, 2}
    shifts = torch.stack([s.double() @ cell[g] for s, g in zip(graph.shift_ints, graph.edge_graph)])
    torch.testing.assert_close(graph.shifts, shifts)


@needs_search
def test_batch_shifts_carry_gradients_to_the_cell() -> None:
    parts, cell, pbc, cutoff = three_structures()
    positions = torch.cat(parts).requires_grad_(True)
    cell = cell.clone().requires_grad_(True)
    graph_index = torch.cat([torch.full((len(p),), g) for g, p in enumerate(parts)])
    graph = batch_radius_graph(positions, graph_index, cutoff, cell, pbc)
    i, j = graph.pairs
    vectors = positions[j] - positions[i] + graph.shifts  # (E, 3)
    grad_cell, grad_pos = torch.autograd.grad(vectors.norm(dim=1).sum(), (cell, positions))
    assert bool(torch.isfinite(grad_cell).all()) and bool(torch.isfinite(grad_pos).all())
    assert float(grad_cell[0].abs().sum()) > 0  # the crystal's images pull on its cell
    assert float(grad_cell[1].abs().sum()) == 0  # the molecule has no images


@needs_search
def test_batch_single_cell_and_no_cell() -> None:
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])  # float32 works too
    graph = batch_radius_graph(positions, None, 1.5, torch.eye(3), [True, False, False])
    expected = ase_edges(positions.double().numpy(), np.eye(3), np.array([True, False, False]), 1.5)
    assert as_edges(graph.pairs, graph.shift_ints) == expected
    assert (1, 0, (2, 0, 0)) in expected  # 0 - 0.9 + 2 = 1.1: the second image counts
    assert graph.shifts.dtype == torch.float32
    graph = batch_radius_graph(positions, torch.tensor([0, 1]), 1.5)
    assert graph.pairs.shape == (2, 0) and graph.shifts.shape == (0, 3)  # different structures never pair
    empty = batch_radius_graph(torch.zeros(0, 3), None, 1.5)
    assert empty.pairs.shape == (2, 0)


def test_missing_optional_dependencies_give_one_clear_error() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["vesin"] = None  # as if not installed
        sys.modules["ase"] = None
        import torch
        import equiformer, equiformer.atomistic
        from equiformer.atomistic import radius_graph
        try:
            radius_graph(torch.zeros(2, 3), 1.0)
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert 'pip install "equiformer[atomistic]"' in out.stdout


# ----------------------------------------------------------------------------- structure checks


def good() -> dict:
    """Two structures: a periodic one and a molecule."""
    return {
        "numbers": torch.tensor([1, 8, 1, 6]),
        "positions": torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        "cell": torch.stack([4.0 * torch.eye(3), torch.zeros(3, 3)]).double(),
        "pbc": torch.tensor([[True, True, True], [False, False, False]]),
        "graph_index": torch.tensor([0, 0, 1, 1]),
    }


def with_(**changes) -> dict:
    return {**good(), **changes}


def nan_at(index: tuple[int, int], value: float) -> torch.Tensor:
    positions = good()["positions"].clone()
    positions[index] = value
    return positions


BAD_STRUCTURES = [
    (with_(numbers=[1, 8, 1, 6]), TypeError, "numbers must be a torch.Tensor"),
    (with_(numbers=torch.tensor([1.0, 8.0, 1.0, 6.0])), TypeError, "numbers must hold integer"),
    (with_(numbers=torch.tensor([[1, 8, 1, 6]])), ValueError, r"numbers must have shape \(N,\)"),
    ({"numbers": torch.zeros(0, dtype=torch.long), "positions": torch.zeros(0, 3)}, ValueError, "at least one atom"),
    (with_(positions=torch.zeros(4, 2, dtype=torch.float64)), ValueError, r"positions must have shape \(N, 3\)"),
    (with_(positions=torch.zeros(3, 3, dtype=torch.float64)), ValueError, r"positions must have shape \(N, 3\) = \(4, 3\)"),
    (with_(positions=torch.zeros(4, 3, dtype=torch.long)), TypeError, "positions must be a floating-point"),
    (with_(positions=nan_at((1, 2), float("nan"))), ValueError, "positions must be finite"),
    (with_(positions=nan_at((3, 0), float("inf"))), ValueError, "positions must be finite"),
    (with_(graph_index=torch.tensor([0.0, 0.0, 1.0, 1.0])), TypeError, "graph_index must hold integer"),
    (with_(graph_index=torch.tensor([0, 0, 1])), ValueError, r"graph_index must have shape \(N,\)"),
    (with_(graph_index=torch.tensor([0, -1, 1, 1])), ValueError, "graph_index must hold non-negative"),
    (with_(graph_index=torch.tensor([0, 0, 2, 2]), cell=None, pbc=None), ValueError, r"structures \[1\] have no atoms"),
    (with_(cell=torch.eye(4, dtype=torch.float64)), ValueError, r"cell must have shape \(3, 3\) or \(G, 3, 3\)"),
    (with_(cell=torch.eye(3, dtype=torch.float64)), ValueError, r"cell \(3, 3\) describes one structure"),
    (with_(cell=torch.zeros(3, 3, 3, dtype=torch.float64)), ValueError, r"cell must have shape \(G, 3, 3\) = \(2, 3, 3\)"),
    (with_(cell=torch.zeros(2, 3, 3, dtype=torch.float32)), TypeError, "cell must have the dtype of positions"),
    (with_(cell=np.zeros((2, 3, 3))), TypeError, "cell must be a torch.Tensor"),
    (with_(cell=torch.full((2, 3, 3), float("nan"), dtype=torch.float64)), ValueError, "cell must be finite"),
    (with_(pbc=torch.tensor([True, True])), ValueError, r"pbc must have shape \(3,\) or \(G, 3\)"),
    (with_(pbc=torch.ones(3, 3, dtype=torch.bool)), ValueError, r"pbc must have shape \(3,\) or \(G, 3\) = \(2, 3\)"),
    (with_(pbc=torch.tensor([1, 1, 1])), TypeError, "pbc must hold booleans"),
    (with_(cell=None), ValueError, "pbc is True on some axis but no cell was given"),
    (with_(cell=None, pbc=True), ValueError, "pbc is True on some axis but no cell was given"),
    # pbc True on an axis with a zero cell vector (the molecule's zero cell, periodic)
    (with_(pbc=torch.tensor([True, False, False])), ValueError, r"pbc is True on axis 0 of structure 1 .* is zero"),
    # coplanar lattice vectors: zero volume
    (
        with_(cell=torch.tensor([[[1.0, 0, 0], [0, 1, 0], [1, 1, 0]], [[0.0] * 3] * 3], dtype=torch.float64)),
        ValueError,
        r"cell\[0\] is singular on its periodic axes",
    ),
    # nearly parallel periodic vectors of a slab (third axis free)
    (
        with_(
            cell=torch.tensor([[[2.0, 0, 0], [2.0, 1e-9, 0], [0, 0, 0]], [[0.0] * 3] * 3], dtype=torch.float64),
            pbc=torch.tensor([[True, True, False], [False, False, False]]),
        ),
        ValueError,
        r"cell\[0\] is singular",
    ),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_STRUCTURES)
def test_check_structure_rejects(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_structure(**kwargs)


def test_check_structure_normalises() -> None:
    checked = check_structure(**good())
    assert checked.num_structures == 2 and checked.cell.shape == (2, 3, 3)
    assert checked.pbc.tolist() == [[True] * 3, [False] * 3]
    one = check_structure(torch.tensor([6]), torch.zeros(1, 3), torch.eye(3))
    assert one.cell.shape == (1, 3, 3) and one.pbc.tolist() == [[True] * 3]  # a cell means periodic
    assert check_structure(torch.tensor([6]), torch.zeros(1, 3)).pbc.tolist() == [[False] * 3]
    shared = check_structure(torch.tensor([6, 6]), torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3),
                             np.array([True, False, True]), torch.tensor([1, 0]))
    assert shared.pbc.tolist() == [[True, False, True]] * 2 and shared.graph_index.dtype == torch.long
    slab = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 0, 0]])  # zero vector on the free axis: fine
    check_structure(torch.tensor([6]), torch.zeros(1, 3), slab, [True, True, False])


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 3), -1.0), ValueError, "cutoff must be positive"),
        ((torch.zeros(2, 3), float("nan")), ValueError, "cutoff must be positive"),
        ((torch.zeros(2, 3), "5"), TypeError, "cutoff must be a real number"),
        ((torch.zeros(2, 3), 1.0, torch.eye(3).expand(2, 3, 3)), ValueError, r"cell must have shape \(3, 3\) for radius_graph"),
        ((torch.zeros(2, 3), 1.0, torch.eye(3), torch.ones(2, 3, dtype=torch.bool)), ValueError, r"pbc must have shape \(3,\) for radius_graph"),
        ((torch.zeros(2, 3), 1.0, torch.zeros(3, 3), None), ValueError, "pbc is True on axis 0"),
        ((torch.zeros(2, 4), 1.0), ValueError, r"positions must have shape \(N, 3\)"),
    ],
)
def test_radius_graph_rejects(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        radius_graph(*args)
