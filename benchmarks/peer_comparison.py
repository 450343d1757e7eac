"""Side by side with equiformer-pytorch 0.5.4 (install with ``pip install -e ".[bench]"``).

Times forward and forward+backward of the same configuration in both libraries, alternating
them repeat by repeat so that machine noise hits both alike, and prints the speed ratio.  Peak
memory is measured in a fresh subprocess per (library, configuration): RSS on CPU,
``max_memory_allocated`` on CUDA.

    python benchmarks/peer_comparison.py [--configs denoise-384 readme-1024 ...] [--device auto] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, peak_memory_since, pick_device, run_measurement, start_memory, sync  # noqa: E402

DENOISE = dict(num_tokens=24, dim=(16, 8, 8, 8), dim_head=(16, 8, 8, 8), heads=(4, 2, 2, 2), depth=10, reversible=True, num_neighbors=6, num_degrees=4, reduce_dim_out=True)
README = dict(num_tokens=24, dim=(4, 4, 2), dim_head=(4, 4, 4), heads=(2, 2, 2), num_degrees=3, depth=4, reduce_dim_out=True, l2_dist_attention=False)
CONFIGS = {
    "denoise-384": (DENOISE, 384),
    "denoise-1536": (DENOISE, 1536),
    "readme-128": (README, 128),
    "readme-1024": ({**README, "num_neighbors": 16}, 1024),
}
QUICK = {"denoise-quick": ({**DENOISE, "depth": 2}, 64), "readme-quick": (README, 32)}


def build(library: str, config: dict, device: torch.device):
    if library == "ours":
        from equiformer import Equiformer
    else:
        from equiformer_pytorch import Equiformer
    torch.manual_seed(0)
    return Equiformer(**config).to(device)


def inputs(n: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    feats = torch.randint(0, 24, (1, n), generator=g).to(device)
    coors = (torch.randn(1, n, 3, generator=g) * 10).to(device)  # protein-like spread
    mask = torch.ones(1, n, dtype=torch.bool, device=device)
    return feats, coors, mask


def step(model, feats, coors, mask, backward: bool) -> None:
    if backward:
        out = model(feats, coors, mask)
        (out.type0.sum() + out.type1.sum()).backward()
    else:
        with torch.no_grad():
            model(feats, coors, mask)


def measure_memory(library: str, name: str, device_name: str) -> float:
    """Run in a fresh process: peak MB of one forward+backward above the idle baseline."""
    device = pick_device(device_name)
    config, n = {**CONFIGS, **QUICK}[name]
    model = build(library, config, device)
    # warm up on a tiny input (lazy initialisation, the peer's basis cache, gradient buffers)
    # so that the allocator holds no memory from a full-size call before we measure one
    step(model, *inputs(min(16, n), device), backward=True)
    feats, coors, mask = inputs(n, device)
    base = start_memory(device)
    step(model, feats, coors, mask, backward=True)
    return peak_memory_since(device, base)


def memory_in_subprocess(library: str, name: str, device_name: str) -> float | None:
    cmd = [sys.executable, __file__, "--memory-of", library, name, "--device", device_name]
    out = run_measurement(cmd)
    if out.returncode != 0:
        print(f"  (memory run of {library} {name} failed: {out.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny configurations, for a smoke run")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-of", nargs=2, metavar=("LIBRARY", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps({"peak_mb": measure_memory(*args.memory_of, args.device)}))
        return
    device = pick_device(args.device)
    names = list(QUICK) if args.quick else args.configs
    repeats = 2 if args.quick else args.repeats
    try:
        import equiformer_pytorch  # noqa: F401

        libraries = ["ours", "peer"]
    except ImportError:
        libraries = ["ours"]
        print("equiformer-pytorch is not installed: timing ours only (pip install -e '.[bench]')")
    print(machine_line(device))
    print(f"{'config':<14} {'lib':<5} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>9}")
    for name in names:
        config, n = {**CONFIGS, **QUICK}[name]
        models = {lib: build(lib, config, device) for lib in libraries}
        data = inputs(n, device)
        times = {(lib, bwd): [] for lib in libraries for bwd in (False, True)}
        for lib in libraries:  # warm-up (the peer also builds its basis cache here)
            step(models[lib], *data, backward=True)
        for _ in range(repeats):
            for bwd in (False, True):
                for lib in libraries:  # alternate the libraries within every repeat
                    sync(device)
                    t0 = time.perf_counter()
                    step(models[lib], *data, backward=bwd)
                    sync(device)
                    times[(lib, bwd)].append(time.perf_counter() - t0)
        result = {}
        for lib in libraries:
            fwd, both = (statistics.median(times[(lib, b)]) for b in (False, True))
            mem = None if args.no_memory else memory_in_subprocess(lib, name, args.device)
            result[lib] = (fwd, both, mem)
            mem_text = f"{mem:>9.0f}" if mem is not None else f"{'-':>9}"
            print(f"{name:<14} {lib:<5} {fwd * 1e3:>9.1f} {both * 1e3:>11.1f} {mem_text}")
        if "peer" in result:
            (of, ob, om), (pf, pb, pm) = result["ours"], result["peer"]
            ratio_mem = f"{pm / om:.1f}x less memory" if om and pm else ""
            print(f"{'':<14} ratio: forward {pf / of:.1f}x, forward+backward {pb / ob:.1f}x faster {ratio_mem}")


if __name__ == "__main__":
    main()
