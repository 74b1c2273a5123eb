#!/usr/bin/env python3
"""Our GEMM against PyTorch's (MKL) on the sgemm shapes, in pairs measured seconds apart
(optional; no test uses it).

    VENV/bin/python scripts/sgemm_pairs.py [--rounds 8] [--out bench/sgemm_pairs.md]

On a shared 2-core machine the speed of both sides drifts by several per cent within minutes,
so a ratio of two bests taken minutes apart (`scripts/bench_compare.sh`, which runs every
PyTorch workload and then every one of ours) moves with the drift. Here every round times
all shapes on both sides back to back (`consolidator bench gemm --json`, then PyTorch in this
process, on the same product `A @ W^T` with W stored [N, K] as a linear layer's weight; the order
of the two sides alternates between rounds), and each shape reports the median and the range
of its per-round ratios. Needs a release build (`cargo build --release`) and a Python with torch
(README, "Speed").
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import SGEMM_SHAPES, timeit  # noqa: E402


def torch_round(budget_s):
    """Best GFLOP/s of each shape within about `budget_s` seconds (after two warm-up products)."""
    out = {}
    for m, k, n in SGEMM_SHAPES:
        a, w, c = torch.randn(m, k), torch.randn(n, k), torch.empty(m, n)
        _, best, _ = timeit(lambda: torch.mm(a, w.t(), out=c), min_time=budget_s, min_reps=3, max_reps=1000)
        out[(m, k, n)] = 2.0 * m * k * n / best / 1e9
    return out


def ours_round(binary, threads):
    """Our best GFLOP/s of each shape, from one `bench gemm --json` run on `threads` threads."""
    env = dict(os.environ, CONSOLIDATOR_THREADS=str(threads))
    run = subprocess.run([binary, "bench", "gemm", "--json"], capture_output=True, text=True, check=True, env=env)
    rows = json.loads(run.stdout)["gemm"]["rows"]
    return {(r["m"], r["k"], r["n"]): r["gflops"] for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="threads on both sides")
    ap.add_argument("--bin", default="target/release/consolidator")
    ap.add_argument("--out", default="bench/sgemm_pairs.md")
    args = ap.parse_args()
    if not os.path.isfile(args.bin):
        sys.exit(f"sgemm_pairs: no {args.bin}; run `cargo build --release` first")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    pairs = {s: [] for s in SGEMM_SHAPES}
    for r in range(args.rounds):
        if r % 2 == 0:
            ours, theirs = ours_round(args.bin, args.threads), torch_round(0.5)
        else:
            theirs, ours = torch_round(0.5), ours_round(args.bin, args.threads)
        for s in SGEMM_SHAPES:
            pairs[s].append((ours[s], theirs[s]))
        print(f"round {r + 1}/{args.rounds}: " + " ".join(f"{o / t:.3f}" for o, t in (pairs[s][-1] for s in SGEMM_SHAPES)),
              flush=True)
    lines = [
        f"# sgemm, ours / PyTorch in pairs, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {args.rounds} rounds",
        "",
        f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} thread(s) a side), "
        f"load before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}. Each round times every shape "
        "on both sides back to back (best GFLOP/s of about half a second each); a ratio is one round's.",
        "",
        "| M × K × N | ours, median GFLOP/s | PyTorch, median | ours / PyTorch, median of rounds | range |",
        "|---|---:|---:|---:|---|",
    ]
    for (m, k, n), p in pairs.items():
        ratios = [o / t for o, t in p]
        lines.append(f"| {m} × {k} × {n} | {statistics.median(o for o, _ in p):.0f} | "
                     f"{statistics.median(t for _, t in p):.0f} | {statistics.median(ratios):.3f} | "
                     f"{min(ratios):.3f}–{max(ratios):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
