"""Ours against three anchors on one workload: fairchem's eSCN-MD (the UMA backbone), fairchem's
EquiformerV2 and GotenNet; forward + backward time, matmul FLOP rate, parameters, peak memory.

The anchors live in their own virtual environment, made once from the repository root
(``/.venv-anchors/`` is git-ignored; pip takes the CPU torch wheel from this machine's disk and
the constraints file keeps every later install from swapping it for a CUDA build)::

    python3 -m venv .venv-anchors && echo "torch==2.13.0" > .venv-anchors/constraints.txt
    P=".venv-anchors/bin/pip"; PIN="-c .venv-anchors/constraints.txt"
    $P install $PIN torch==2.13.0 -e .
    # fairchem-core 2.24 without its CUDA-only dependencies (cuda-python, nvidia-cutlass-dsl,
    # nvalchemi-toolkit-ops: GPU kernels and a GPU neighbour list), gotennet without its compiled
    # PyG extensions (torch-scatter/-sparse/-cluster: sources only on PyPI; see anchor_models.py)
    $P install --no-deps fairchem-core==2.24.0 gotennet==1.1.2
    $P install $PIN "setuptools<81" "ase>=3.26" "ase-db-backends>=0.10" backoff clusterscope==0.0.18 \\
        "e3nn>=0.5" huggingface-hub "hydra-core>=1.3" "lmdb>=1.6.2,<=1.7.3" monty "numba>=0.62" \\
        orjson pyyaml requests scipy submitit torchtnt tqdm wandb websockets \\
        torch-geometric pytorch-lightning omegaconf matplotlib
    # fairchem-core 1.10 cannot sit beside 2.24: its EquiformerV2 files (and the few modules they
    # import), unzipped into the venv and imported from there at run time
    $P download --no-deps fairchem-core==1.10.0 -d .venv-anchors/wheels
    unzip -q .venv-anchors/wheels/fairchem_core-1.10.0-py3-none-any.whl -d .venv-anchors/fairchem110 \\
        'fairchem/core/models/equiformer_v2/*' fairchem/core/models/base.py \\
        fairchem/core/models/scn/smearing.py 'fairchem/core/common/*' fairchem_core-1.10.0.dist-info/METADATA

Then::

    .venv-anchors/bin/python benchmarks/anchors.py [--nodes 384 1536] [--lmax 2 4] [--mmax 2]
        [--channels 64] [--heads 8] [--depth 4] [--repeats 5] [--warmup 2] [--threads 2]
        [--models ours escn_md eqv2 gotennet gotennet_s] [--allocators default keep]
        [--no-memory] [--out runs/anchors/results.json] [--quick]

The workload, identical for every model: one graph of n nodes uniform in a cube at 0.1 nodes/A^3,
atom types drawn from H, C, N, O, and its 16-nearest-neighbour directed edges, found once with
torch and handed to every model (ours: ``forward_packed(neighbors=)``; eSCN-MD and EquiformerV2:
the data object's ``edge_index`` with ``otf_graph=False``; GotenNet: ``forward(edge_index,
edge_diff, edge_vec)``), so no model searches for neighbours.  Every model's cutoff is the longest
edge x 1.05 (rounded up to 0.5 A), so no envelope removes an edge.  C = 64 channels per degree,
8 heads, 4 layers, lmax 2 and 4 with mmax 2 (ours gets ``mmax`` where its config has the field,
and the output says when not), float32, eval mode with dropouts off.  Energy = sum over nodes of
one ``Linear(C, 1)`` of the final l = 0 features; a step is ``energy.backward()`` with the
positions requiring grad (forces, and the weight gradients, for every model).  The models are
alternated within each (n, lmax) cell (A B C D A B C D ...), ``--warmup`` untimed rounds first,
then the median of ``--repeats``.  Widths other than C follow each model's own defaults scaled
to C (the settings are in results.json): ours ``dim_head`` = C/heads, ``ff_mult`` 4, MLP
attention; eSCN-MD ``hidden_channels`` = ``edge_channels`` = C, its class defaults otherwise
(``ff_type`` grid, gate activation, RMS norm, 512 Gaussians); EquiformerV2 (the 1.10 backbone
class) attention C, alpha C/4 and value C/heads per head, FFN 4C, edge channels C; GotenNet the
package's shipped ``configs/model/gotennet.yaml`` with the sizes set.

Columns: the median time; ``x ours`` = anchor time / our time in the same cell (above 1: we are
faster); GF/s = the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and convolutions only: mm, bmm, addmm, baddbmm, conv, and einsum as bmm;
gathers, scatters and elementwise work are not counted) over the median time; params (head
included); peak MB = the growth of the resident set over two steps in a fresh process
(``VmHWM`` after the kernel's peak counter is reset, minus ``VmRSS`` once the model and its
inputs are built), one process per model, cell and allocator.

Allocators (glibc, set in the environment of a worker process: the script re-runs itself, one
timing worker per setting): ``default`` (no ``MALLOC_*`` variables); ``keep``, what
``equiformer.training.allocator.keep_freed_memory`` sets for ``denoise.py``
(``MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2000000000``: freed blocks stay in
the heap for the next step); ``mmap64k``, the setting of ``common.run_measurement``
(``MALLOC_MMAP_THRESHOLD_=65536``: blocks above 64 KiB are returned on free, so peak RSS tracks
peak live memory).

GotenNet-S row: the "small" preset (4 layers of width 256, lmax 2, 8 heads, 64 radial functions:
the QM9 experiment config shipped in the package, which names sizes only in its checkpoint
aliases small/base/large; S/B/L differ in depth, 4/6/12 layers) against ours at lmax 2, depth 4
and the width (a multiple of 8) whose parameter count is closest; both counts are printed.
``--models ... escn_md_fast`` adds eSCN-MD with fairchem's opt-in inference backend
``umas_fast_pytorch`` (block-diagonal SO(2) GEMMs, one radial MLP for all layers; the same
function: features agreed to 1e-6 in a check).

Not the same between the models, by their design: eSCN-MD has no attention (heads unused) and
its grid feed-forward runs an MLP at 42 (lmax 2) or more sphere points per node; GotenNet has no
SO(2) convolution and so no mmax, and at equal C it has 3-8x fewer parameters than the others
(hence the GotenNet-S row); EquiformerV2 detaches its edge rotations (no force path through them:
less backward work) and draws a random roll angle per edge each call.  So read GF/s and the
parameter counts beside the ratios.  The full default run takes roughly half an hour on 2 cores
(estimated from smoke runs: timing about 10 minutes per allocator, then about 40 short memory
processes); ``--quick``: 32 nodes, lmax 2 (unless ``--lmax`` is given), one repeat, one warm-up round, for a
smoke run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import anchor_models as am
from common import machine_line, peak_rss_mb, reset_peak_rss, rss_mb

REPO = Path(__file__).resolve().parent.parent
RESULT_TAG = "@@RESULT "  # a worker's last line: this tag, then its JSON
ALLOCATORS = {
    "default": {},
    "keep": {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "2000000000"},
    "mmap64k": {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)},
}
ALL_MODELS = (*am.MODELS, *am.EXTRA_MODELS, "gotennet_s")


def cells(spec: dict) -> list[dict]:
    """The (nodes, lmax) cells and the models timed together in each; ours is in every cell."""
    main = ["ours", *[m for m in spec["models"] if m not in ("ours", "gotennet_s")]]
    out = [{"nodes": n, "lmax": l, "models": main} for n in spec["nodes"] for l in spec["lmax"]]
    if "gotennet_s" in spec["models"]:
        out += [{"nodes": n, "lmax": am.GOTENNET_S["lmax"], "models": ["ours_s", "gotennet_s"], "s_row": True} for n in spec["nodes"]]
    return out


def build(spec: dict, name: str, workload: am.Workload, lmax: int) -> am.Anchor:
    return am.build(name, workload, spec["channels"], spec["depth"], spec["heads"], lmax, spec["mmax"], Path(spec["fairchem110"]))


def _build_all(spec: dict, cell: dict, workload: am.Workload) -> tuple[list[am.Anchor], dict]:
    anchors, errors = [], {}
    for name in cell["models"]:
        try:
            anchors.append(build(spec, name, workload, cell["lmax"]))
        except Exception as e:  # noqa: BLE001  (an anchor that cannot be imported or built is left out, with the reason)
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"  {name} left out: {errors[name]}", flush=True)
    return anchors, errors


# ------------------------------------------------------------------------------------ workers


def worker_time(spec: dict, count_flops: bool) -> dict:
    """Every cell: build its models, alternate them, median of the repeats."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(spec["threads"])
    results = []
    for cell in cells(spec):
        w = am.make_workload(cell["nodes"])
        anchors, errors = _build_all(spec, cell, w)
        row = {**cell, "cutoff": w.cutoff, "edges": w.recv.numel(), "errors": errors, "models": {}}
        for _ in range(spec["warmup"]):
            for a in anchors:
                a.step()
        for a in anchors:
            energy, forces = a.run()
            entry = {"params": a.params, "settings": a.settings, "energy": float(energy),
                     "force_rms": float(forces.pow(2).mean().sqrt()), "finite": bool(torch.isfinite(forces).all()) and math.isfinite(float(energy))}
            if count_flops:
                with FlopCounterMode(display=False) as counter:
                    a.step()
                entry["flops"] = counter.get_total_flops()
            row["models"][a.name] = entry
        times = {a.name: [] for a in anchors}
        for _ in range(spec["repeats"]):
            for a in anchors:
                t0 = time.perf_counter()
                a.step()
                times[a.name].append(time.perf_counter() - t0)
        for a in anchors:
            row["models"][a.name]["time_s"] = statistics.median(times[a.name])
        print(f"  n={cell['nodes']} L={cell['lmax']}: " + ", ".join(f"{k} {1e3 * statistics.median(v):.1f} ms" for k, v in times.items()), flush=True)
        results.append(row)
    return {"cells": results}


def worker_memory(spec: dict, nodes: int, lmax: int, name: str) -> dict:
    torch.set_num_threads(spec["threads"])
    w = am.make_workload(nodes)
    anchor = build(spec, name, w, lmax)
    base = rss_mb()
    reset_peak_rss()
    reset_ok = peak_rss_mb() - rss_mb() < 1.0
    for _ in range(2):
        anchor.step()
    return {"peak_mb": peak_rss_mb() - base, "hwm_reset": reset_ok}


def run_worker(args: list[str], allocator: str, threads: int, stream: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("MALLOC_") and k.endswith("_"))}
    env.update(ALLOCATORS[allocator])
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result, out = None, []
    for line in proc.stdout:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif stream:
            print(line, end="", flush=True)
        else:
            out.append(line)
    err = proc.stderr.read()
    if proc.wait() != 0 or result is None:
        raise RuntimeError(f"worker {args} failed ({proc.returncode}):\n{''.join(out)}{err[-4000:]}")
    return result


# ------------------------------------------------------------------------------------ the table


def fmt(x, spec: str = ".1f", missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def print_table(result: dict) -> None:
    allocs = result["allocators"]
    head = f"{'nodes':>5} {'L':>2} {'model':<13}{'params':>10}{'GFLOP':>8}"
    for a in allocs:
        head += f" | {a + ' ms':>10} {'x ours':>6} {'GF/s':>5} {'peak MB':>7}"
    print(head)
    print("-" * len(head))
    for cell in result["cells"]:
        ours = "ours_s" if cell.get("s_row") else "ours"
        for name, m in cell["models"].items():
            line = f"{cell['nodes']:>5} {cell['lmax']:>2} {name:<13}{m['params']:>10,}{fmt(m.get('flops', 0) / 1e9, '.2f'):>8}"
            for a in allocs:
                t, t0 = m["time_s"].get(a), cell["models"].get(ours, {}).get("time_s", {}).get(a)
                ratio = t / t0 if t and t0 else None
                gfs = m["flops"] / t / 1e9 if t and m.get("flops") else None
                line += f" | {fmt(t and 1e3 * t):>10} {fmt(ratio, '.2f'):>6} {fmt(gfs, '.0f'):>5} {fmt(m['peak_mb'].get(a)):>7}"
            print(line)
        for name, err in cell["errors"].items():
            print(f"{cell['nodes']:>5} {cell['lmax']:>2} {name:<13} left out: {err}")


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[384, 1536])
    parser.add_argument("--lmax", type=int, nargs="+", help="default 2 4 (--quick: 2)")
    parser.add_argument("--mmax", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds of every model before the timed ones")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=[*am.MODELS, "gotennet_s"], choices=ALL_MODELS,
                        help="ours is always timed; gotennet_s adds the GotenNet-S row (with ours at its parameter count)")
    parser.add_argument("--allocators", nargs="+", default=["default", "keep"], choices=list(ALLOCATORS))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--fairchem110", default=str(Path(sys.prefix) / "fairchem110"), help="where fairchem 1.10's files were unzipped")
    parser.add_argument("--out", default=str(REPO / "runs" / "anchors" / "results.json"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # memory worker: nodes,lmax,model
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.spec)
        if args.worker == "time":
            result = worker_time(spec, args.count_flops)
        else:
            nodes, lmax, name = args.cell.split(",")
            result = worker_memory(spec, int(nodes), int(lmax), name)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    if args.quick:
        args.nodes, args.repeats, args.warmup = [32], 1, 1
    args.lmax = args.lmax or ([2] if args.quick else [2, 4])
    spec = {k: getattr(args, k) for k in ("nodes", "lmax", "mmax", "channels", "heads", "depth", "repeats", "warmup", "threads", "models", "fairchem110")}
    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    versions = am.versions(Path(args.fairchem110))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    has_mmax = am.ours_has_mmax()
    print(f"C={args.channels} heads={args.heads} depth={args.depth} mmax={args.mmax} k={am.K}, fp32, median of {args.repeats} "
          f"after {args.warmup} warm-up round(s), models alternated; "
          + ("ours gets mmax" if has_mmax else "ours runs WITHOUT mmax (this equiformer has no mmax setting: all orders)"))
    try:
        stood_in = am.install_pyg_shims()
    except ImportError as e:  # no torch_geometric: GotenNet and EquiformerV2 will be left out
        stood_in = [f"none ({e})"]
    if stood_in:
        print(f"stand-ins (not on any timed path): {', '.join(stood_in)}")

    result = {"machine": machine_line(torch.device("cpu")), "versions": versions, "spec": spec, "ours_mmax": has_mmax,
              "stand_ins": stood_in, "allocators": args.allocators, "allocator_env": {a: ALLOCATORS[a] for a in args.allocators}}
    cells_out = None
    for i, alloc in enumerate(args.allocators):
        print(f"timing, allocator {alloc} {ALLOCATORS[alloc] or ''}", flush=True)
        flags = ["--worker", "time", "--spec", json.dumps(spec)] + (["--count-flops"] if i == 0 else [])
        timed = run_worker(flags, alloc, args.threads, stream=True)["cells"]
        if cells_out is None:
            cells_out = timed
            for cell in cells_out:
                for m in cell["models"].values():
                    m["time_s"], m["peak_mb"] = {alloc: m["time_s"]}, {}
        else:
            for cell, new in zip(cells_out, timed):
                for name, m in new["models"].items():
                    if name in cell["models"]:
                        cell["models"][name]["time_s"][alloc] = m["time_s"]
    if not args.no_memory:
        for alloc in args.allocators:
            print(f"peak memory, allocator {alloc}: one process per model and cell", flush=True)
            for cell in cells_out:
                for name, m in cell["models"].items():
                    mem = run_worker(["--worker", "memory", "--spec", json.dumps(spec), "--cell", f"{cell['nodes']},{cell['lmax']},{name}"],
                                     alloc, args.threads, stream=False)
                    m["peak_mb"][alloc] = mem["peak_mb"]
                    if not mem["hwm_reset"]:
                        m.setdefault("notes", []).append("VmHWM reset refused: peak includes start-up")
    result["cells"] = cells_out
    for cell in cells_out:
        if cell.get("s_row"):
            s = cell["models"]
            print(f"GotenNet-S row (n={cell['nodes']}): GotenNet-S {s['gotennet_s']['params']:,} parameters, "
                  f"ours {s['ours_s']['params']:,} (dim {s['ours_s']['settings']['dim']})")
        bad = [k for k, m in cell["models"].items() if not m["finite"] or not m.get("flops", 1)]
        if bad:
            print(f"WARNING n={cell['nodes']} L={cell['lmax']}: non-finite energy/forces or zero FLOPs: {bad}")
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
