"""One prepared check for a lent GPU: correctness on the device, speed, a short training run.

    python benchmarks/gpu_check.py [--device auto] [--out gpu_check_report.md] [--quick]
                                   [--time-budget 450] [--commit SHA]

Parts, in order, each in its own subprocess with its own time limit, so that a part that fails,
hangs or poisons the CUDA context is reported and the rest still runs:

1. ``environment``: device name, torch/CUDA versions, TF32 settings, commit.
2. ``equivariance``: relative equivariance error of every output degree, for a few model
   configurations (MLP/L2 attention, SO(2)/CG tensor products, reversible, edge chunks, edge
   tokens + adjacency + linear heads + type-1 inputs, reflections), in float64, float32 and
   float32 weights under bf16 autocast; plus one backward pass with finite gradients.
3. ``masking``: padded nodes given huge random features, placed next to a real node, must not
   change any real node's outputs, and their own outputs must be exactly zero; same dtypes.
4. ``denoise``: ``denoise.py --preset large --steps 200`` into a temporary ``--out``: wall time,
   final validation RMSD and last training record from its ``metrics.jsonl``.
5. ``peer_comparison``: ``benchmarks/peer_comparison.py --device ...`` (ours, and
   equiformer-pytorch when installed): its table as printed.

Each part may use its own reserved seconds plus whatever the earlier parts left unused; the
whole run stays inside ``--time-budget`` (default 450 s: done within 8 minutes with start-up).
The report is markdown, or JSON when ``--out`` ends in ``.json``.  Exit status 0 when every part
passed, 1 otherwise.  ``--quick`` uses tiny sizes (a CPU smoke run: ``--device cpu --quick``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import pick_device  # noqa: E402

DTYPES = ("float64", "float32", "bf16-autocast")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "bf16-autocast": 5e-2}
"""Equivariance: relative to each output's largest entry (``equiformer.testing``'s defaults)."""
MASK_TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "bf16-autocast": 1e-2}
"""Masking: real outputs must not change; on CUDA scatter-adds sum in a varying order, so the
bound is the dtype's rounding, relative to the output scale, not exact equality."""

SMALL = dict(dim=(8, 6, 4), dim_in=5, num_degrees=3, heads=(2, 2, 1), dim_head=(4, 3, 2), depth=2,
             num_neighbors=6, valid_radius=2.5)
FULL = dict(input_degrees=2, dim_in=(5, 3), num_edge_tokens=3, edge_dim=4, attend_sparse_neighbors=True,
            num_adj_degrees_embed=2, num_linear_attn_heads=1)
EQUIVARIANCE_CONFIGS = {
    # name: (overrides, check under a mirror too)
    "mlp-so2": (dict(l2_dist_attention=False, tensor_product="so2"), False),
    "l2-so2": (dict(l2_dist_attention=True, tensor_product="so2"), False),
    "mlp-cg": (dict(l2_dist_attention=False, tensor_product="cg"), False),
    "l2-cg": (dict(l2_dist_attention=True, tensor_product="cg"), False),
    "reversible": (dict(l2_dist_attention=False, reversible=True), False),
    "edge-chunks": (dict(l2_dist_attention=True, edge_chunk_size=24), False),
    "full-l2-reversible": (dict(FULL, l2_dist_attention=True, reversible=True), False),
    "full-mlp-cg-reflect": (dict(FULL, l2_dist_attention=False, tensor_product="cg",
                                 reflection_equivariance=True), True),
}
MASKING_CONFIGS = {
    "mlp-so2": dict(l2_dist_attention=False, tensor_product="so2"),
    "l2-so2": dict(l2_dist_attention=True, tensor_product="so2"),
    "mlp-cg": dict(l2_dist_attention=False, tensor_product="cg"),
    "l2-cg": dict(l2_dist_attention=True, tensor_product="cg"),
    "reversible": dict(l2_dist_attention=True, reversible=True),
    "edge-chunks": dict(l2_dist_attention=False, edge_chunk_size=24),
}

PARTS = ("equivariance", "masking", "denoise", "peer_comparison")
RESERVED_S = {"equivariance": 75, "masking": 45, "denoise": 210, "peer_comparison": 100}
"""Seconds each part is sure to get (their sum fits the default --time-budget)."""

DENOISE_STEPS = 200
DENOISE_QUICK = ["--dim", "8,4", "--heads", "2", "--dim-head", "4", "--depth", "1", "--num-neighbors", "8",
                 "--adj-degrees", "2", "--crop", "10", "--batch-size", "2", "--val-proteins", "3",
                 "--warmup-steps", "2", "--threads", "1"]


# ---------------------------------------------------------------- checks run in a child process

def _build(overrides: dict, dtype_name: str, device: torch.device, n: int, seed: int = 0):
    """A small randomised model and inputs (built on the CPU, then moved), as the tests make them."""
    from equiformer import Equiformer
    from equiformer.testing import randomize_parameters

    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    config = {**SMALL, **overrides}
    torch.manual_seed(seed)
    model = Equiformer(**config).to(dtype)
    randomize_parameters(model, generator=torch.Generator().manual_seed(seed + 1))
    model = model.to(device)
    g = torch.Generator().manual_seed(seed)
    b = 2
    feats = {0: torch.randn(b, n, model.dim_in[0], dtype=dtype, generator=g)}
    for l in range(1, model.input_degrees):
        feats[l] = torch.randn(b, n, model.dim_in[l], 2 * l + 1, dtype=dtype, generator=g)
    coors = torch.randn(b, n, 3, dtype=dtype, generator=g)
    mask = torch.rand(b, n, generator=g) > 0.25
    mask[:, 0] = True
    kwargs = {}
    if config.get("num_edge_tokens"):
        kwargs["edges"] = torch.randint(0, config["num_edge_tokens"], (b, n, n), generator=g).to(device)
    if config.get("attend_sparse_neighbors"):
        i = torch.arange(n)
        kwargs["adj_mat"] = ((i[:, None] - i[None, :]).abs() == 1).to(device)
    feats = {l: f.to(device) for l, f in feats.items()}
    return model, feats, coors.to(device), mask.to(device), kwargs


def _autocast(device: torch.device, dtype_name: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype_name == "bf16-autocast")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def equivariance_row(name: str, dtype_name: str, device: torch.device, n: int) -> dict:
    from equiformer.testing import equivariance_errors, random_reflection, random_rotation, random_translation

    overrides, reflect = EQUIVARIANCE_CONFIGS[name]
    model, feats, coors, mask, kwargs = _build(overrides, dtype_name, device, n)
    degrees = sorted(feats)

    def fn(*args):
        with _autocast(device, dtype_name):
            out = model(dict(zip(degrees, args[:-1])), args[-1], mask, **kwargs)
        return [v.float() if v.dtype == torch.bfloat16 else v for v in out.degrees.values()]

    g = torch.Generator().manual_seed(7)
    rotation = (random_reflection if reflect else random_rotation)(torch.float64, device, g)
    translation = random_translation(torch.float64, device, g)
    args = [feats[l] for l in degrees] + [coors]
    errors = equivariance_errors(fn, args, degrees + ["coords"], list(range(model.num_degrees)),
                                 rotation, translation)
    tolerance = TOLERANCE[dtype_name]
    # a backward pass through the same configuration: it runs and every gradient is finite
    coors_grad = coors.detach().clone().requires_grad_(True)
    outputs = fn(*[feats[l] for l in degrees], coors_grad)
    sum(o.float().square().sum() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None] + [coors_grad.grad]
    backward_ok = bool(all(torch.isfinite(g_).all() for g_ in grads)) and len(grads) > 1
    return {"config": name, "dtype": dtype_name, "reflect": reflect, "errors": [_finite(e) for e in errors],
            "tolerance": tolerance, "backward_ok": backward_ok,
            "ok": backward_ok and all(e <= tolerance for e in errors if e == e)}


def masking_row(name: str, dtype_name: str, device: torch.device, n: int) -> dict:
    overrides = dict(MASKING_CONFIGS[name], num_linear_attn_heads=2, input_degrees=2, dim_in=(5, 3))
    model, feats, coors, mask, _ = _build(overrides, dtype_name, device, n)
    pad = ~mask
    g = torch.Generator().manual_seed(9)

    def garbage(x: torch.Tensor, scale: float) -> torch.Tensor:
        return (scale * torch.randn(x.shape, dtype=torch.float64, generator=g)).to(dtype=x.dtype, device=x.device)

    feats2 = {l: f.clone() for l, f in feats.items()}
    coors2 = coors.clone()
    for l in feats2:
        feats2[l][pad] = garbage(feats2[l][pad], 100.0)
    coors2[pad] = garbage(coors2[pad], 0.01) + coors[mask][:1]  # right next to a real node
    with torch.no_grad(), _autocast(device, dtype_name):
        base = model(feats, coors, mask)
        moved = model(feats2, coors2, mask)
    change, padded_zero = 0.0, True
    for l in base.degrees:
        a, b = base.degrees[l].double(), moved.degrees[l].double()
        scale = max(a[mask].abs().max().item(), 1e-30)
        change = max(change, (a[mask] - b[mask]).abs().max().item() / scale)
        padded_zero = padded_zero and bool((b[pad] == 0).all())
    tolerance = MASK_TOLERANCE[dtype_name]
    return {"config": name, "dtype": dtype_name, "padded_nodes": int(pad.sum()), "change": _finite(change),
            "tolerance": tolerance, "padded_zero": padded_zero,
            "ok": padded_zero and math.isfinite(change) and change <= tolerance}


def run_part_child(part: str, device_name: str, quick: bool) -> int:
    """Print one JSON line per check as it finishes (a timeout keeps the ones done)."""
    device = pick_device(device_name)
    n = 16 if quick else 40
    row_fn, configs = {"equivariance": (equivariance_row, EQUIVARIANCE_CONFIGS),
                       "masking": (masking_row, MASKING_CONFIGS)}[part]
    for name in configs:
        for dtype_name in DTYPES:
            started = time.perf_counter()
            try:
                row = row_fn(name, dtype_name, device, n)
            except Exception as error:  # reported, and the next check still runs
                row = {"config": name, "dtype": dtype_name, "ok": False,
                       "error": f"{type(error).__name__}: {str(error).strip()[:300]}"}
            row["seconds"] = round(time.perf_counter() - started, 3)
            print(json.dumps(row), flush=True)
    return 0


# ---------------------------------------------------------------- parent: parts, limits, report

def run_command(cmd: list[str], timeout: float, quick: bool = False) -> dict:
    """Run ``cmd`` in its own process group; on timeout kill that group (its children too).

    ``quick``: one CPU thread per child (tiny models gain nothing from more, and threads that
    spin-wait on a busy machine made the smoke run several times slower)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "1"} if quick else {})}
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env=env)
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        stdout, stderr = process.communicate()
    except KeyboardInterrupt:  # the child has its own session: Ctrl-C does not reach it
        _kill_group(process)
        raise
    return {"cmd": cmd, "returncode": process.returncode, "timed_out": timed_out, "stdout": stdout,
            "stderr": stderr, "seconds": round(time.perf_counter() - started, 1), "timeout": round(timeout, 1)}


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _status(run: dict, ok: bool) -> str:
    if run["timed_out"]:
        return "timed out"
    return "ok" if ok and run["returncode"] == 0 else "failed"


def part_checks(part: str, args, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--device", args.device]
    run = run_command(cmd + (["--quick"] if args.quick else []), timeout, args.quick)
    rows = []
    for line in run["stdout"].splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    expected = len(DTYPES) * len(EQUIVARIANCE_CONFIGS if part == "equivariance" else MASKING_CONFIGS)
    ok = len(rows) == expected and all(r.get("ok") for r in rows)
    passed = sum(bool(r.get("ok")) for r in rows)
    summary = f"{passed}/{expected} checks passed"
    return {"status": _status(run, ok), "summary": summary, "rows": rows, "run": run}


def part_denoise(args, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu_check_denoise_") as out:
        extra = (DENOISE_QUICK + ["--steps", "3", "--val-every", "3"] if args.quick
                 else ["--preset", "large", "--steps", str(DENOISE_STEPS)])
        cmd = [sys.executable, str(REPO / "denoise.py"), *extra, "--out", out, "--device", args.device,
               "--no-progress"]
        run = run_command(cmd, timeout, args.quick)
        records = []
        metrics = Path(out) / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    end = next((r for r in records if r.get("kind") == "end"), None)
    final_val = val[-1] if val else None
    last_train = train[-1] if train else None
    ok = end is not None and end.get("status") == "finished" and final_val is not None and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in final_val.values() if not isinstance(v, (str, bool)))
    steps = end.get("step") if end else (last_train or {}).get("step")
    summary = f"{steps} steps in {run['seconds']} s"
    if final_val:
        summary += (f"; final validation RMSD noisy {final_val.get('rmsd_noisy', float('nan')):.3f} Å, "
                    f"denoised {final_val.get('rmsd_denoised', float('nan')):.3f} Å")
    return {"status": _status(run, ok), "summary": summary, "final_val": final_val, "last_train": last_train,
            "end": {k: v for k, v in end.items() if k != "param_digests"} if end else None, "run": run}


def part_peer(args, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / "peer_comparison.py"), "--device", args.device]
    if args.quick:
        cmd += ["--quick", "--no-memory"]
    run = run_command(cmd, timeout, args.quick)
    rows = re.findall(r"^\S+ +(?:ours|peer) +\d", run["stdout"], flags=re.MULTILINE)
    ok = bool(rows) and "failed" not in run["stdout"]
    return {"status": _status(run, ok), "summary": f"{len(rows)} timed rows", "run": run}


def environment(args, device: torch.device) -> dict:
    env: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "python": platform.python_version(), "torch": torch.__version__,
                 "torch_cuda": torch.version.cuda, "device": str(device), "cpu_count": os.cpu_count()}
    try:
        from equiformer.version import __version__

        env["equiformer"] = __version__
    except Exception as error:
        env["equiformer"] = f"unknown ({type(error).__name__})"
    env["commit"] = args.commit or _commit()
    try:
        if device.type == "cuda":
            env["device_name"] = torch.cuda.get_device_name(device)
            env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
            env["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
            env["cudnn"] = torch.backends.cudnn.version()
            env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
            env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        else:
            env["device_name"] = platform.processor() or platform.machine()
    except Exception as error:  # a broken CUDA set-up is worth reporting, not a crash
        env["device_error"] = f"{type(error).__name__}: {error}"
    return env


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown (no git checkout; pass --commit)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available; pass --commit)"


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.2e}"
    return str(x)


def markdown(report: dict) -> str:
    lines = ["# GPU check report", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["environment"].items()]
    lines += ["", "## Summary", "", "| part | status | seconds | summary |", "|---|---|---|---|"]
    for name, part in report["parts"].items():
        lines.append(f"| {name} | {part['status']} | {part['run']['seconds']} | {part['summary']} |")
    for name in ("equivariance", "masking"):
        part = report["parts"].get(name)
        if not part:
            continue
        lines += ["", f"## {name.capitalize()}", ""]
        if name == "equivariance":
            lines += ["Relative error `max|f(gx) - g f(x)| / max|f(x)|` per output degree; backward: one pass "
                      "with finite gradients.", "",
                      "| config | dtype | degree 0 | degree 1 | degree 2 | tolerance | backward | ok | s |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in part["rows"]:
                errors = (r.get("errors") or []) + [None] * 3
                lines.append(f"| {r['config']} | {r['dtype']} | " + " | ".join(_fmt(e) for e in errors[:3])
                             + f" | {_fmt(r.get('tolerance'))} | {_fmt(r.get('backward_ok'))} | {_fmt(r['ok'])}"
                             f" | {r.get('seconds')} |")
        else:
            lines += ["Largest change of a real node's output (relative to the output scale) when padded nodes "
                      "get huge random features next to a real node; padded outputs must be exactly zero.", "",
                      "| config | dtype | padded nodes | change | tolerance | padded zero | ok | s |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in part["rows"]:
                lines.append(f"| {r['config']} | {r['dtype']} | {_fmt(r.get('padded_nodes'))} | "
                             f"{_fmt(r.get('change'))} | {_fmt(r.get('tolerance'))} | "
                             f"{_fmt(r.get('padded_zero'))} | {_fmt(r['ok'])} | {r.get('seconds')} |")
        errors = [f"- {r['config']} {r['dtype']}: `{r['error']}`" for r in part["rows"] if r.get("error")]
        lines += (["", "Errors:", ""] + errors) if errors else []
    part = report["parts"].get("denoise")
    if part:
        lines += ["", "## Denoise", "", f"`{' '.join(part['run']['cmd'][1:])}`", "",
                  f"- wall time: {part['run']['seconds']} s (limit {part['run']['timeout']} s)",
                  f"- end: `{json.dumps(part['end'])}`", f"- final validation: `{json.dumps(part['final_val'])}`",
                  f"- last training record: `{json.dumps(part['last_train'])}`", "", "```",
                  _tail(part["run"]["stdout"], 12) or "(no output)", "```"]
    part = report["parts"].get("peer_comparison")
    if part:
        lines += ["", "## Peer comparison", "", f"`{' '.join(part['run']['cmd'][1:])}`", "", "```",
                  part["run"]["stdout"].rstrip() or "(no output)", "```"]
    failures = [(name, p) for name, p in report["parts"].items() if p["status"] != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for name, p in failures:
            run = p["run"]
            lines += [f"### {name}: {p['status']} (exit {run['returncode']}, {run['seconds']} s of "
                      f"{run['timeout']} s)", "", "```", _tail(run["stderr"]) or "(no stderr)", "```", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument("--out", default="gpu_check_report.md", help="report path (.json: JSON, else markdown)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke run")
    parser.add_argument("--time-budget", type=float, default=450.0, help="seconds for all parts together")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--commit", default=None, help="commit to report when there is no git checkout")
    parser.add_argument("--part", choices=("equivariance", "masking"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        return run_part_child(args.part, args.device, args.quick)
    deadline = time.monotonic() + args.time_budget
    device = pick_device(args.device)
    args.device = str(device)  # the children get the resolved device, not 'auto'
    report = {"environment": environment(args, device), "parts": {}}
    print(f"device: {report['environment'].get('device_name', device)}; torch {torch.__version__}; "
          f"commit {report['environment']['commit']}", flush=True)
    for index, part in enumerate(args.parts):
        later = sum(RESERVED_S[p] for p in args.parts[index + 1:])
        timeout = max(deadline - time.monotonic() - later, 1.0)
        started = time.perf_counter()
        try:
            if part in ("equivariance", "masking"):
                result = part_checks(part, args, timeout)
            elif part == "denoise":
                result = part_denoise(args, timeout)
            else:
                result = part_peer(args, timeout)
        except Exception as error:  # the harness itself: still report, still run the rest
            result = {"status": "failed", "summary": f"{type(error).__name__}: {error}",
                      "run": {"cmd": [], "returncode": None, "timed_out": False, "stdout": "",
                              "stderr": repr(error), "seconds": round(time.perf_counter() - started, 1),
                              "timeout": round(timeout, 1)}}
        report["parts"][part] = result
        print(f"{part}: {result['status']} ({result['summary']}; {result['run']['seconds']} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) if out.suffix == ".json" else markdown(report))
    all_ok = all(p["status"] == "ok" for p in report["parts"].values())
    print(f"report written to {out}: {'all parts ok' if all_ok else 'SOME PARTS FAILED'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
