"""The workload and the models of ``benchmarks/anchors.py`` (run with ``.venv-anchors/bin/python``).

``make_workload`` builds the one graph every model gets; ``build`` makes one model on it and
returns an ``Anchor``: its parameter count and ``run()`` / ``step()``, forward + backward of
``energy = sum over nodes of Linear(C -> 1)(final l=0 features)`` with the positions requiring
grad (``energy.backward()``: the forces, and the weight gradients, for every model alike);
``run()`` also returns the energy and the forces.
"""
from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

K = 16  # nearest neighbours per node: the edges of every model
DENSITY = 0.1  # nodes per A^3 (as node_scaling.py): the 16th neighbour at about 3.4 A in the bulk
ELEMENTS = (1, 6, 7, 8)  # atom types drawn at random (H, C, N, O)
NUM_ELEMENTS = 10  # size of every model's element embedding (ids 0..9)
MODELS = ("ours", "escn_md", "eqv2", "gotennet")  # the default set, timed in this order
EXTRA_MODELS = ("escn_md_fast",)  # on request: eSCN-MD with fairchem's "umas_fast_pytorch" backend
GOTENNET_S = {"n_atom_basis": 256, "n_interactions": 4, "lmax": 2, "num_heads": 8, "n_rbf": 64}  # see anchors.py


@dataclass
class Workload:
    types: Tensor  # (N,) atomic numbers
    pos: Tensor  # (N, 3)
    recv: Tensor  # (E,) node receiving edge e ...
    send: Tensor  # (E,) ... from this node; E = K N
    cutoff: float  # every model's cutoff (envelope) radius, above the longest edge


def make_workload(n: int, seed: int = 0) -> Workload:
    """``n`` nodes uniform in a cube at ``DENSITY``, random ``ELEMENTS``, ``K``-nearest-neighbour
    directed edges; the cutoff is the longest edge x 1.05 rounded up to 0.5 A, so no model's
    envelope removes an edge."""
    g = torch.Generator().manual_seed(seed)
    side = (n / DENSITY) ** (1 / 3)
    pos = torch.rand(n, 3, generator=g) * side
    types_ = torch.tensor(ELEMENTS)[torch.randint(len(ELEMENTS), (n,), generator=g)]
    dist = torch.cdist(pos, pos)
    dist.fill_diagonal_(math.inf)
    length, send = dist.topk(K, dim=1, largest=False)  # (n, K)
    recv = torch.arange(n).repeat_interleave(K)
    cutoff = math.ceil(2 * 1.05 * float(length.max())) / 2
    return Workload(types_, pos, recv, send.reshape(-1), cutoff)


@dataclass
class Anchor:
    name: str
    params: int
    run: Callable[[], tuple[Tensor, Tensor]]  # forward + backward: (energy, forces), detached
    settings: dict = field(default_factory=dict)

    def step(self) -> None:
        self.run()


def _anchor(name: str, backbone: nn.Module, channels: int, w: Workload, l0_features, settings: dict) -> Anchor:
    """``l0_features(pos)`` -> ``(N, C)`` final invariant features of ``backbone``."""
    torch.manual_seed(1)  # the same head weights whatever the backbone's set-up drew
    head = nn.Linear(channels, 1)
    params = sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in head.parameters())

    def run() -> tuple[Tensor, Tensor]:
        backbone.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        pos = w.pos.clone().requires_grad_(True)
        energy = head(l0_features(pos)).sum()
        energy.backward()
        return energy.detach(), -pos.grad

    return Anchor(name, params, run, settings)


# ------------------------------------------------------------------------------------- ours


def ours_has_mmax() -> bool:
    from equiformer import config

    names = getattr(config.EquiformerConfig, "FIELD_NAMES", None) or config.FIELD_NAMES
    return "mmax" in names


def ours_settings(channels: int, depth: int, heads: int, lmax: int, mmax: int) -> dict:
    """Our constructor keywords: width C per degree, value width C per head group, MLP attention."""
    kw = {
        "num_tokens": NUM_ELEMENTS, "dim": channels, "num_degrees": lmax + 1, "heads": heads, "dim_head": channels // heads,
        "depth": depth, "num_neighbors": K, "l2_dist_attention": False, "reduce_dim_out": False,
    }
    if ours_has_mmax():
        kw["mmax"] = mmax
    return kw


def build_ours(w: Workload, channels: int, depth: int, heads: int, lmax: int, mmax: int, name: str = "ours") -> Anchor:
    from equiformer import Equiformer

    kw = ours_settings(channels, depth, heads, lmax, mmax)
    model = Equiformer(valid_radius=w.cutoff, **kw).eval()
    neighbors = torch.stack([w.recv, w.send])  # (i, j): i receives from j

    def l0(pos):
        return model.forward_packed(w.types, pos, neighbors=neighbors).type0  # (N, C)

    kw["graph"] = "forward_packed(neighbors=): the kNN edges"
    return _anchor(name, model, channels, w, l0, kw)


# ------------------------------------------------------------------ shims for GotenNet, EqV2


def install_pyg_shims() -> list[str]:
    """GotenNet imports ``torch_cluster`` (for a radius graph we never build: edges are handed
    over) and fairchem 1.10 imports ``torch_scatter``; PyPI has only sources of both (compiled
    wheels live off PyPI).  Where they are missing, stand-ins go into ``sys.modules``:
    ``torch_scatter.scatter`` is PyG's own (native torch) ``scatter``, not on any timed path;
    ``torch_cluster.radius_graph`` raises.  torch_geometric is imported first, so it still sees
    the real state of its optional dependencies.  Returns the names stood in for."""
    import torch_geometric.utils  # noqa: F401  (before the stand-ins, see above)

    stood_in = []
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        from torch_geometric.utils import scatter as pyg_scatter

        mod = types.ModuleType("torch_scatter")
        mod.scatter = lambda src, index, dim=-1, out=None, dim_size=None, reduce="sum": pyg_scatter(
            src, index, dim=dim, dim_size=dim_size, reduce=reduce
        )
        sys.modules["torch_scatter"] = mod
        stood_in.append("torch_scatter")
    try:
        import torch_cluster  # noqa: F401
    except ImportError:
        mod = types.ModuleType("torch_cluster")

        def radius_graph(*args, **kwargs):
            raise NotImplementedError("torch_cluster stand-in: hand the model its edges")

        mod.radius_graph = radius_graph
        sys.modules["torch_cluster"] = mod
        stood_in.append("torch_cluster")
    return stood_in


def import_fairchem110(root: Path):
    """fairchem-core 1.10's ``equiformer_v2`` package from the files unzipped under ``root``,
    next to the installed fairchem-core 2.x.  Both are ``fairchem.core``: the 2.x modules are
    set aside in ``sys.modules`` while the 1.10 files import (their package ``__init__``s, which
    pull in calculators and trainers, are replaced by empty packages pointing at the folders),
    then the 1.10 modules are taken out and the 2.x ones put back.  The 1.10 classes keep their
    own module globals, and nothing on their forward path imports lazily."""
    if not (root / "fairchem/core/models/equiformer_v2/equiformer_v2.py").exists():
        raise ImportError(f"no fairchem 1.10 files under {root} (see the venv recipe in anchors.py)")
    install_pyg_shims()
    is_fairchem = lambda k: k == "fairchem" or k.startswith("fairchem.")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if is_fairchem(k)}
    try:
        for name in ("fairchem", "fairchem.core", "fairchem.core.models"):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root / name.replace(".", "/"))]
            sys.modules[name] = pkg
        return importlib.import_module("fairchem.core.models.equiformer_v2.equiformer_v2")
    finally:
        for k in [k for k in sys.modules if is_fairchem(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def versions(fairchem110: Path) -> dict[str, str]:
    """Versions of what is measured: the installed packages and the unzipped fairchem 1.10."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "equiformer", "fairchem-core", "gotennet", "torch-geometric", "e3nn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["fairchem-core (EquiformerV2 files)"] = "not unzipped"
    for meta in fairchem110.glob("fairchem_core-*.dist-info/METADATA"):
        for line in meta.read_text().splitlines():
            if line.startswith("Version:"):
                out["fairchem-core (EquiformerV2 files)"] = line.split(":", 1)[1].strip()
    return out


# ----------------------------------------------------------------------------------- anchors


def build_escn_md(w: Workload, channels: int, depth: int, heads: int, lmax: int, mmax: int, fast: bool = False) -> Anchor:
    from fairchem.core.datasets.atomic_data import AtomicData
    from fairchem.core.models.uma.escn_md import eSCNMDBackbone

    kw = {
        "max_num_elements": NUM_ELEMENTS, "sphere_channels": channels, "hidden_channels": channels, "edge_channels": channels,
        "lmax": lmax, "mmax": mmax, "num_layers": depth, "otf_graph": False, "direct_forces": False, "regress_forces": True,
        "use_dataset_embedding": False, "always_use_pbc": False, "execution_mode": "umas_fast_pytorch" if fast else "general",
    }
    model = eSCNMDBackbone(cutoff=w.cutoff, **kw).eval()
    if fast:
        model.prepare_for_inference(None, None)  # block-diagonal SO(2) GEMMs, one radial MLP for all layers
    n, e = w.pos.shape[0], w.recv.numel()
    edge_index = torch.stack([w.send, w.recv])  # fairchem: (source, target)

    def l0(pos):
        data = AtomicData(
            pos=pos, atomic_numbers=w.types, cell=torch.eye(3)[None], pbc=torch.zeros(1, 3, dtype=torch.bool),
            natoms=torch.tensor([n]), edge_index=edge_index, cell_offsets=torch.zeros(e, 3), nedges=torch.tensor([e]),
            charge=torch.zeros(1, dtype=torch.long), spin=torch.zeros(1, dtype=torch.long),
            fixed=torch.zeros(n, dtype=torch.long), tags=torch.zeros(n, dtype=torch.long),
        )
        return model(data)["node_embedding"][:, 0, :]  # (N, (L+1)^2, C) -> l = 0

    kw["graph"] = "AtomicData.edge_index (otf_graph=False): the kNN edges"
    return _anchor("escn_md_fast" if fast else "escn_md", model, channels, w, l0, kw)


def build_eqv2(w: Workload, channels: int, depth: int, heads: int, lmax: int, mmax: int, root: Path) -> Anchor:
    mod = import_fairchem110(root)
    # the class defaults (sphere 128: attention 128, alpha 32 and value 16 per head, FFN 512)
    # scaled to C; dropouts off
    kw = {
        "max_num_elements": NUM_ELEMENTS, "num_layers": depth, "sphere_channels": channels, "attn_hidden_channels": channels,
        "num_heads": heads, "attn_alpha_channels": channels // 4, "attn_value_channels": channels // heads,
        "ffn_hidden_channels": 4 * channels, "edge_channels": channels, "lmax_list": [lmax], "mmax_list": [mmax],
        "use_pbc": False, "otf_graph": False, "regress_forces": True, "alpha_drop": 0.0, "drop_path_rate": 0.0, "proj_drop": 0.0,
    }
    model = mod.EquiformerV2Backbone(max_radius=w.cutoff, **kw).eval()
    n = w.pos.shape[0]
    edge_index = torch.stack([w.send, w.recv])  # fairchem: (source, target)

    def l0(pos):
        data = types.SimpleNamespace(
            pos=pos, atomic_numbers=w.types, natoms=torch.tensor([n]), batch=torch.zeros(n, dtype=torch.long),
            edge_index=edge_index,
        )
        return model(data)["node_embedding"].embedding[:, 0, :]  # SO3_Embedding (N, (L+1)^2, C)

    kw["graph"] = "data.edge_index (otf_graph=False, use_pbc=False): the kNN edges"
    return _anchor("eqv2", model, channels, w, l0, kw)


def build_gotennet(w: Workload, channels: int, depth: int, heads: int, lmax: int, n_rbf: int = 32, name: str = "gotennet") -> Anchor:
    install_pyg_shims()
    from gotennet.models.components.layers import CosineCutoff
    from gotennet.models.representation.gotennet import GotenNet

    # the package's configs/model/gotennet.yaml, with the sizes set and attention dropout off
    kw = {
        "n_atom_basis": channels, "n_interactions": depth, "num_heads": heads, "lmax": lmax, "n_rbf": n_rbf, "max_z": NUM_ELEMENTS,
        "radial_basis": "expnorm", "activation": "swish", "weight_init": "xavier_uniform", "bias_init": "zeros",
        "attn_dropout": 0.0, "edge_updates": True, "scale_edge": False, "sep_htr": True, "sep_dir": True, "sep_tensor": True,
    }
    model = GotenNet(cutoff_fn=CosineCutoff(w.cutoff), **kw).eval()
    edge_index = torch.stack([w.send, w.recv])  # PyG: (source, target), aggregated at target

    def l0(pos):
        vec = pos[w.send] - pos[w.recv]  # as GotenNet's own Distance module: source - target
        # GotenNet normalises edge_vec in place: hand it a copy (its Distance module takes the
        # lengths from an indexed copy too)
        h, _ = model(w.types, edge_index, vec.norm(dim=-1), vec.clone())
        return h  # (N, C)

    kw["graph"] = "forward(edge_index, edge_diff, edge_vec): the kNN edges, no self-loops"
    return _anchor(name, model, channels, w, l0, kw)


def build(name: str, w: Workload, channels: int, depth: int, heads: int, lmax: int, mmax: int, fairchem110: Path) -> Anchor:
    torch.manual_seed(0)
    if name == "ours":
        return build_ours(w, channels, depth, heads, lmax, mmax)
    if name in ("escn_md", "escn_md_fast"):
        return build_escn_md(w, channels, depth, heads, lmax, mmax, fast=name == "escn_md_fast")
    if name == "eqv2":
        return build_eqv2(w, channels, depth, heads, lmax, mmax, fairchem110)
    if name == "gotennet":
        return build_gotennet(w, channels, depth, heads, lmax)
    if name == "gotennet_s":
        s = GOTENNET_S
        return build_gotennet(w, s["n_atom_basis"], s["n_interactions"], s["num_heads"], s["lmax"], s["n_rbf"], "gotennet_s")
    if name == "ours_s":
        return build_ours(w, ours_s_channels(w, heads), GOTENNET_S["n_interactions"], heads, GOTENNET_S["lmax"], 2, "ours_s")
    raise ValueError(f"unknown model {name!r}")


def ours_s_channels(w: Workload, heads: int) -> int:
    """Our width (a multiple of ``heads``) at GotenNet-S's depth and lmax whose parameter count
    is closest to GotenNet-S's."""
    from equiformer import Equiformer

    def count(c: int) -> int:  # as build_ours counts: the model and the energy head
        kw = ours_settings(c, GOTENNET_S["n_interactions"], heads, GOTENNET_S["lmax"], 2)
        return sum(p.numel() for p in Equiformer(**kw).parameters()) + c + 1

    s = GOTENNET_S
    target = build_gotennet(w, s["n_atom_basis"], s["n_interactions"], s["num_heads"], s["lmax"], s["n_rbf"]).params
    lo, hi = 1, 64  # in units of `heads`: widths 8 .. 512
    while lo < hi:  # smallest width with at least the target count
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid * heads) < target else (lo, mid)
    best = min({max(lo - 1, 1), lo}, key=lambda m: abs(count(m * heads) - target))
    return best * heads
