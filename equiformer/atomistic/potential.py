"""An interatomic potential: per-atom energies from an Equiformer, forces and stress by autograd.

Units follow ASE: Å, eV, eV/Å, eV/Å^3.  The energy of structure g is

    E_g = sum over its atoms i of  scale * (e_i - e_lone(Z_i)) + ref[Z_i]

with ``e_i`` the network's invariant output of atom i, ``e_lone(Z)`` the network's output for an
atom of element Z with no neighbours (subtracted so that an isolated atom's energy is exactly its
reference: ``ref`` keeps the meaning of isolated-atom energies), and ``ref`` / ``scale`` buffers
fitted on training data (``fit_reference``, ``fit_scale``).

Forces are ``-dE/dr``.  The stress is ``(1/V) dE/d(strain)`` for a symmetric strain applied to the
positions and the cell alike, the sign convention of ASE (positive under tension).  The network
runs with ``smooth_cutoff`` on an all-neighbours radius graph, so energy and forces are smooth
as atoms cross the cutoff.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..model import Equiformer
from .neighbors import CheckedStructure, PbcLike, batch_radius_graph, check_structure

__all__ = ["Potential"]

CHECKPOINT_FORMAT = "equiformer.potential/1"
_NUM_Z = 119  # atomic numbers 0 (ASE's dummy "X") to 118

# Small model for a start; every one of these may be overridden by keyword.
_DEFAULT_KEYWORDS: dict[str, Any] = {
    "dim": (32, 16, 8),
    "num_degrees": 3,
    "heads": 4,
    "dim_head": 8,
    "depth": 2,
    "l2_dist_attention": False,
}
# Set by the potential itself: a second value would contradict elements / cutoff.
_DERIVED_KEYWORDS = {"num_tokens": "len(elements)", "valid_radius": "cutoff"}
# Required for a well-behaved potential: accepted only with these values.
_FIXED_KEYWORDS = {"reduce_dim_out": True, "smooth_cutoff": True}


def _check_elements(elements: Sequence[int]) -> tuple[int, ...]:
    if isinstance(elements, (str, bytes)) or not isinstance(elements, Sequence):
        raise TypeError(f"elements must be a sequence of atomic numbers, got {type(elements).__name__}")
    if len(elements) == 0:
        raise ValueError("elements is empty: give the atomic numbers the potential should know")
    for z in elements:
        if isinstance(z, bool) or not isinstance(z, Integral) or not 0 <= int(z) < _NUM_Z:
            raise ValueError(f"elements must hold atomic numbers 0..{_NUM_Z - 1}, got {z!r}")
    result = tuple(int(z) for z in elements)
    if len(set(result)) != len(result):
        raise ValueError(f"elements has repeated atomic numbers: {list(result)}")
    return result


def _check_cutoff(cutoff: float) -> float:
    if isinstance(cutoff, bool) or not isinstance(cutoff, Real):
        raise TypeError(f"cutoff must be a real number (Å), got {type(cutoff).__name__}")
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be positive and finite (Å), got {cutoff}")
    return float(cutoff)


def _model_keywords(cutoff: float, num_elements: int, keywords: dict[str, Any]) -> dict[str, Any]:
    """The user's Equiformer keywords, checked, over the defaults, with the potential's own."""
    for name, source in _DERIVED_KEYWORDS.items():
        if name in keywords:
            raise TypeError(f"Potential sets {name} itself (from {source}): do not pass it")
    num_neighbors = keywords.get("num_neighbors", math.inf)
    if num_neighbors != math.inf:
        raise ValueError(
            f"num_neighbors must be float('inf') for a potential, got {num_neighbors!r}: a k-nearest "
            "graph drops a neighbour abruptly when another comes closer, which makes the energy jump"
        )
    for name, value in _FIXED_KEYWORDS.items():
        if name in keywords and keywords[name] != value:
            raise ValueError(f"Potential needs {name}={value}, got {keywords[name]!r}")
    return {
        **_DEFAULT_KEYWORDS,
        **keywords,
        **_FIXED_KEYWORDS,
        "num_tokens": num_elements,
        "valid_radius": cutoff,
        "num_neighbors": math.inf,
    }


class Potential(nn.Module):
    """Energy, forces and stress of molecules and periodic structures from an ``Equiformer``.

    ``elements``: the atomic numbers it knows (token ``k`` is ``elements[k]``); ``cutoff``: the
    interaction radius (Å), the model's ``valid_radius``.  Other keywords go to ``Equiformer``
    (small defaults: ``dim=(32, 16, 8)``, ``num_degrees=3``, ``heads=4``, ``dim_head=8``,
    ``depth=2``, ``l2_dist_attention=False``); ``num_neighbors`` must stay ``inf`` and
    ``reduce_dim_out`` / ``smooth_cutoff`` stay True.  The dtype and device are the module's
    (``potential.double()``, ``.to("cuda")``); inputs are cast to them.  ``ref`` ``(num_elements,)``
    and ``scale`` ``()`` are buffers, saved in the state dict.
    """

    ref: Tensor
    scale: Tensor
    token_of_z: Tensor

    def __init__(self, elements: Sequence[int], cutoff: float, **equiformer_keywords: Any):
        super().__init__()
        self.elements = _check_elements(elements)
        self.cutoff = _check_cutoff(cutoff)
        num_elements = len(self.elements)
        self.model = Equiformer(**_model_keywords(self.cutoff, num_elements, equiformer_keywords))
        device = self.model.device
        dtype = torch.get_default_dtype()  # the model's parameters are made in it
        self.register_buffer("ref", torch.zeros(num_elements, dtype=dtype, device=device))  # (K,)
        self.register_buffer("scale", torch.ones((), dtype=dtype, device=device))  # ()
        # Atomic number -> token, -1 for unknown elements; derived from elements (saved apart).
        table = torch.full((_NUM_Z,), -1, dtype=torch.long, device=device)  # (119,)
        table[list(self.elements)] = torch.arange(num_elements, dtype=torch.long, device=device)
        self.register_buffer("token_of_z", table, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    @property
    def device(self) -> torch.device:
        return self.scale.device

    def tokens(self, numbers: Tensor) -> Tensor:
        """Atomic numbers ``(N,)`` -> tokens ``(N,)`` long; ``ValueError`` naming unknown elements."""
        numbers = numbers.to(self.device).long()  # (N,)
        in_table = (numbers >= 0) & (numbers < _NUM_Z)  # (N,)
        tokens = torch.where(in_table, self.token_of_z[numbers.clamp(0, _NUM_Z - 1)], -1)  # (N,)
        unknown = tokens < 0  # (N,)
        if bool(unknown.any()):
            bad = sorted(set(numbers[unknown].tolist()))
            raise ValueError(
                f"unknown element(s) with atomic number(s) {bad}: this potential knows {list(self.elements)}"
            )
        return tokens

    # ------------------------------------------------------------------ energy, forces, stress
    def forward(
        self,
        numbers: Tensor,
        positions: Tensor,
        cell: Tensor | None = None,
        pbc: PbcLike | None = None,
        graph_index: Tensor | None = None,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, Tensor]:
        """``numbers`` ``(N,)`` atomic numbers, ``positions`` ``(N, 3)`` Å (need not lie inside the
        cell), ``cell`` ``(3, 3)`` or ``(G, 3, 3)`` lattice vectors as rows or None, ``pbc`` ``(3,)``
        or ``(G, 3)`` (default: periodic iff a cell is given), ``graph_index`` ``(N,)`` structure
        ids (default: one structure).

        Returns a dict: ``energy`` ``(G,)``; if ``forces``, ``forces`` ``(N, 3)`` = -dE/dr; if
        ``stress``, ``stress`` ``(G, 3, 3)`` = (1/V) dE/d(strain) (fully periodic structures only,
        else ``ValueError``).  With ``create_graph`` every output keeps its graph (training on
        forces or stress); otherwise outputs are detached once forces or stress are computed
        (the energy alone keeps its graph, for training on energies).
        """
        dtype, device = self.dtype, self.device
        if isinstance(positions, Tensor) and positions.is_floating_point():
            positions = positions.to(device=device, dtype=dtype)  # (N, 3)
        if isinstance(cell, Tensor) and cell.is_floating_point():
            cell = cell.to(device=device, dtype=dtype)  # (3, 3) or (G, 3, 3)
        if isinstance(numbers, Tensor):
            numbers = numbers.to(device)  # (N,)
        if isinstance(graph_index, Tensor):
            graph_index = graph_index.to(device)  # (N,)
        checked = check_structure(numbers, positions, cell, pbc, graph_index)
        tokens = self.tokens(numbers)  # (N,)
        if stress and (checked.cell is None or not bool(checked.pbc.all())):
            raise ValueError("stress needs fully periodic structures: give a cell and pbc True on all three axes")

        if not (forces or stress):
            return {"energy": self._energy(tokens, positions, checked, False, False)[0]}
        with torch.enable_grad():  # forces even under torch.no_grad() (inference, ASE)
            energy, wrt = self._energy(tokens, positions, checked, forces, stress)
            needs = [x for x in wrt if x is not None]
            if energy.requires_grad:
                grads = torch.autograd.grad(
                    energy.sum(), needs, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
            else:  # a frozen model and no edges: nothing depends on the geometry
                grads = tuple(torch.zeros_like(x) for x in needs)
        out = {"energy": energy if create_graph else energy.detach()}
        grads_iter = iter(grads)
        if forces:
            out["forces"] = -next(grads_iter)  # (N, 3)
        if stress:
            volume = torch.linalg.det(checked.cell).abs()  # (G,)
            out["stress"] = next(grads_iter) / volume[:, None, None]  # (G, 3, 3)
        return out

    def _energy(
        self, tokens: Tensor, positions: Tensor, checked: CheckedStructure, forces: bool, stress: bool
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Energies ``(G,)`` and the leaves to differentiate: (positions or None, strain or None)."""
        dtype, device = self.dtype, self.device
        graph_index, cell, num_structures = checked.graph_index, checked.cell, checked.num_structures
        position_leaf = strain = None
        if forces:
            # differentiate w.r.t. the positions given, keeping any graph they already carry
            position_leaf = positions if positions.requires_grad else positions.detach().requires_grad_(True)
            positions = position_leaf
        if stress:
            strain = torch.zeros(num_structures, 3, 3, dtype=dtype, device=device, requires_grad=True)  # (G, 3, 3)
            sym = 0.5 * (strain + strain.transpose(-1, -2))  # (G, 3, 3) symmetric: no rotation
            # positions and cell deform together, so fractional coordinates stay fixed
            positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph_index])  # (N, 3)
            cell = cell + cell @ sym  # (G, 3, 3)
        # shifts = S @ cell in torch: the strained cell reaches the edge vectors
        graph = batch_radius_graph(positions, graph_index, self.cutoff, cell, checked.pbc)

        # One lone atom of every element rides along, each in its own structure and without
        # edges: its output e_lone(Z) is subtracted so that an isolated atom contributes exactly ref.
        n_atoms, num_elements = tokens.shape[0], len(self.elements)
        all_elements = torch.arange(num_elements, dtype=torch.long, device=device)  # (K,)
        out = self.model.forward_packed(
            torch.cat([tokens, all_elements]),  # (N + K,)
            torch.cat([positions, torch.zeros(num_elements, 3, dtype=dtype, device=device)]),  # (N + K, 3)
            torch.cat([graph_index, num_structures + all_elements]),  # (N + K,)
            neighbors=graph.pairs,
            shifts=graph.shifts,
        ).type0  # (N + K,)
        lone = out[n_atoms:]  # (K,)
        atom_energy = self.scale * (out[:n_atoms] - lone[tokens]) + self.ref[tokens]  # (N,)
        energy = torch.zeros(num_structures, dtype=dtype, device=device).index_add(0, graph_index, atom_energy)  # (G,)
        return energy, (position_leaf, strain)

    # ------------------------------------------------------------------ fitting the buffers
    @torch.no_grad()
    def fit_reference(self, numbers: Tensor, graph_index: Tensor, energies: Tensor) -> Tensor:
        """Per-element reference energies by least squares: ``counts (G, K) @ ref ≈ energies (G,)``.

        ``numbers`` ``(N,)`` atomic numbers of a training set, ``graph_index`` ``(N,)`` structure
        ids ``0..G-1``, ``energies`` ``(G,)`` total energies.  Solved in float64 with the
        minimum-norm solution, so sets that do not pin every element down (one element only,
        fixed stoichiometry, an element absent) still give an answer.  Sets and returns ``ref``.
        """
        tokens = self.tokens(numbers).cpu()  # (N,)
        graph_index = graph_index.to("cpu").long()  # (N,)
        energies = torch.as_tensor(energies, dtype=torch.float64, device="cpu").reshape(-1)  # (G,)
        if graph_index.shape != tokens.shape:
            raise ValueError(f"graph_index must have shape (N,) = {tuple(tokens.shape)}, got {tuple(graph_index.shape)}")
        num_structures = energies.shape[0]
        if int(graph_index.min()) < 0 or int(graph_index.max()) >= num_structures:
            raise ValueError(f"graph_index must hold structure ids 0..{num_structures - 1}, one per energy")
        counts = torch.zeros(num_structures, len(self.elements), dtype=torch.float64, device="cpu")  # (G, K)
        counts.index_put_((graph_index, tokens), torch.ones(tokens.shape, dtype=torch.float64, device="cpu"), accumulate=True)
        # gelsd (SVD): the minimum-norm solution when counts is rank-deficient
        solution = torch.linalg.lstsq(counts, energies[:, None], driver="gelsd").solution[:, 0]  # (K,)
        self.ref.copy_(solution.to(device=self.device, dtype=self.dtype))
        return self.ref.clone()

    @torch.no_grad()
    def fit_scale(self, forces: Tensor) -> Tensor:
        """``scale`` = root mean square of the training force components ``(N, 3)`` (eV/Å), as
        MACE and NequIP do: the network then predicts forces of order one.  Sets and returns it."""
        forces = torch.as_tensor(forces, dtype=torch.float64, device="cpu")  # (N, 3)
        if forces.numel() == 0 or not bool(torch.isfinite(forces).all()):
            raise ValueError("fit_scale needs a non-empty tensor of finite forces (N, 3)")
        rms = forces.square().mean().sqrt()  # ()
        if float(rms) == 0.0:
            raise ValueError("fit_scale: every force is zero, so the scale would be zero")
        self.scale.copy_(rms.to(device=self.device, dtype=self.dtype))
        return self.scale.clone()

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically: a temporary file in the same folder, fsynced, then renamed
        over ``path``, so a crash never leaves a half-written checkpoint under that name."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "model_config": self.model.config.to_dict(),
            # CPU copies: the checkpoint loads on machines without the training device
            "state_dict": {k: v.detach().to("cpu") for k, v in self.state_dict().items()},
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_folder(path.parent)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = None) -> Potential:
        """Rebuild a potential saved by ``save`` (weights, ``ref``, ``scale`` and dtype included).
        ``map_location`` as ``torch.load``; a device moves the potential there."""
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # unpickling, zip and truncation errors vary: name the file
            raise ValueError(f"{os.fspath(path)} is not a readable equiformer potential checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"{os.fspath(path)} is not an equiformer potential checkpoint ({CHECKPOINT_FORMAT}): found {found!r}")
        try:
            config = dict(payload["model_config"])
            elements, cutoff = payload["elements"], payload["cutoff"]
            if config.pop("num_tokens") != len(elements) or config.pop("valid_radius") != cutoff:
                raise ValueError("model_config disagrees with elements / cutoff")
            potential = cls(elements, cutoff, **config)
            state = payload["state_dict"]
            potential.to(state["scale"].dtype)  # the saved dtype, so outputs match bitwise
            potential.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{os.fspath(path)} holds a damaged equiformer potential checkpoint: {exc}") from exc
        if isinstance(map_location, (str, torch.device)):
            potential.to(map_location)
        return potential

    def extra_repr(self) -> str:
        return f"elements={list(self.elements)}, cutoff={self.cutoff}"


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
