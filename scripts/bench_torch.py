#!/usr/bin/env python3
"""PyTorch CPU baseline timings to compare the Rust engine with (optional; no test uses it).

    python3 -m venv VENV && VENV/bin/pip install -r scripts/requirements-fixtures.txt
    VENV/bin/python scripts/bench_torch.py --json bench/torch_baseline.json

All timings use torch.set_num_threads(2) (override with --threads) and float32. Each
number is the median (and the min) of several timed repeats after warm-up. The
machine may be shared, so treat the numbers as indicative.

Sections:
  sgemm     C[M,N] = A[M,K] @ W[N,K]^T (a linear layer's product, as `consolidator bench gemm`
            times it); GFLOP/s = 2MKN / t. The row-major-B product A @ B[K,N] is timed too
            ("gflops_nn_best", for reference; it ran 1-3 % faster on the ViT shapes)
  vit_fwd   timm vit_tiny_patch16_224 / vit_small_patch16_224 at batch 1 and 8, and the small model
            (vit_mnist_tiny: 28x28x1, patch 4, width 64, depth 4, 4 heads) at batch 1 and 128 (random init),
            eval, no_grad; ms and images/s; each case in a fresh subprocess, whose peak RSS is reported
  grouped   grouped linear T=1576 tokens, D=768 -> 768, g groups, via einsum, bmm and conv1d(groups=g);
            useful GFLOP/s = 2*T*D*D/g / t
  train     one step (forward + cross-entropy + backward + AdamW) in ms, for
              full fine-tuning (every parameter trainable), and
              consolidator: backbone frozen, one g=8 branch (grouped weight + bias, no reorder) beside
              qkv/proj/fc1/fc2 of every block, with the branches and the head trainable;
            on the two ViT cases and on the small model at batch 32 and 128 (images/s reported);
            each case runs in a fresh subprocess, whose peak RSS (getrusage ru_maxrss) is reported.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SGEMM_SHAPES = [
    (1576, 192, 576), (1576, 192, 768), (1576, 768, 192),
    (1576, 384, 1152), (1576, 384, 1536), (1576, 1536, 384),
    (2048, 2048, 2048),
]
GROUPS = [1, 2, 4, 8, 16, 32, 64, 384]
# The small model this project ships (`vit_mnist_tiny`: 28x28x1, patch 4, width 64, depth 4, 4 heads).
MNIST_TINY = dict(model=None, img=28, patch=4, in_chans=1, embed_dim=64, depth=4, num_heads=4, num_classes=10)
TRAIN_CASES = {
    "vit_tiny_224_b16": dict(model="vit_tiny_patch16_224", img=224, batch=16, num_classes=1000),
    "vit_c32_p4_d192_l6_b64": dict(
        model=None, img=32, patch=4, embed_dim=192, depth=6, num_heads=3, batch=64, num_classes=10),
    "vit_mnist_tiny_b32": dict(MNIST_TINY, batch=32),
    "vit_mnist_tiny_b128": dict(MNIST_TINY, batch=128),
}
# Inference workloads: (model, batch); "vit_mnist_tiny" is built from MNIST_TINY.
FWD_CASES = [("vit_tiny_patch16_224", 1), ("vit_tiny_patch16_224", 8), ("vit_small_patch16_224", 1),
             ("vit_small_patch16_224", 8), ("vit_mnist_tiny", 1), ("vit_mnist_tiny", 128)]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


LAST_CPU_MS = [0.0]


def timeit(fn, min_time=1.0, min_reps=5, max_reps=200, warmup=2):
    """Returns (median wall s, min wall s, reps); LAST_CPU_MS[0] = process CPU ms per rep (all threads)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    LAST_CPU_MS[0] = (time.process_time() - cpu0) * 1e3 / len(times)
    return statistics.median(times), min(times), len(times)


def machine_info():
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
    }
    try:
        import timm
        info["timm"] = timm.__version__
    except Exception:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                     "Flags", "L2 cache", "L3 cache", "CPU max MHz"):
                v = v.strip()
                if k == "Flags":
                    v = " ".join(f for f in v.split() if f.startswith(("avx", "fma", "amx")))
                info["lscpu " + k] = v
    except Exception:
        pass
    info["mkldnn"] = torch.backends.mkldnn.is_available()
    info["mkl"] = torch.backends.mkl.is_available()
    return info


# ---------------------------------------------------------------------------


def bench_sgemm():
    rows = []
    for m, k, n in SGEMM_SHAPES:
        a = torch.randn(m, k)
        w = torch.randn(n, k)  # stored as a linear layer's weight: the product reads it transposed
        b = torch.randn(k, n)
        c = torch.empty(m, n)
        med, mn, reps = timeit(lambda: torch.mm(a, w.t(), out=c), min_time=2.0, min_reps=10)
        cpu_ms = LAST_CPU_MS[0]
        _, mn_nn, _ = timeit(lambda: torch.mm(a, b, out=c), min_time=1.0, min_reps=10)
        flop = 2.0 * m * k * n
        rows.append(dict(m=m, k=k, n=n, ms=med * 1e3, ms_min=mn * 1e3, gflops=flop / med / 1e9,
                         gflops_best=flop / mn / 1e9, gflops_nn_best=flop / mn_nn / 1e9, reps=reps, cpu_ms=cpu_ms))
        print(f"sgemm {m}x{k}x{n}: median {med*1e3:8.2f} ms {flop/med/1e9:7.1f} GFLOP/s | min {mn*1e3:8.2f} ms "
              f"{flop/mn/1e9:7.1f} GFLOP/s | cpu {cpu_ms:8.2f} ms/call | A @ B row-major best {flop/mn_nn/1e9:7.1f}")
    return rows


def run_fwd_case(name, batch, threads):
    """One inference workload in this (fresh) process: timing and this process's peak RSS."""
    import timm
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if name == "vit_mnist_tiny":
        model, shape = build_train_model(MNIST_TINY).eval(), (batch, 1, 28, 28)
    else:
        model, shape = timm.create_model(name, pretrained=False).eval(), (batch, 3, 224, 224)
    x = torch.randn(*shape)
    with torch.no_grad():
        med, mn, reps = timeit(lambda: model(x), min_reps=10, min_time=3.0)
    return dict(model=name, batch=batch, ms=med * 1e3, ms_min=mn * 1e3, ms_per_image=med * 1e3 / batch,
                images_per_s=batch / med, reps=reps, cpu_ms=LAST_CPU_MS[0], peak_rss_mb=peak_rss_mb(),
                threads=threads)


def bench_vit_fwd(threads):
    rows = []
    for name, batch in FWD_CASES:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_fwd", name, str(batch),
                              "--threads", str(threads)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name} batch {batch}: median {row['ms']:8.2f} ms, min {row['ms_min']:8.2f} ms, "
              f"{row['images_per_s']:8.1f} img/s, cpu {row['cpu_ms']:8.2f} ms/call, peak RSS {row['peak_rss_mb']:.0f} MB")
    return rows


def bench_grouped(t_tokens=1576, d=768):
    rows = []
    x = torch.randn(t_tokens, d)
    for g in GROUPS:
        ci = co = d // g
        w = torch.randn(g, co, ci) * 0.02
        w_conv = w.reshape(g * co, ci, 1).contiguous()
        x_conv = x.t().contiguous().unsqueeze(0)  # [1, D, T]

        def f_einsum():
            return torch.einsum("tgi,goi->tgo", x.view(t_tokens, g, ci), w).reshape(t_tokens, d)

        def f_bmm():
            xg = x.view(t_tokens, g, ci).transpose(0, 1)  # [g, T, ci]
            return torch.bmm(xg, w.transpose(1, 2)).transpose(0, 1).reshape(t_tokens, d)

        def f_conv():
            return F.conv1d(x_conv, w_conv, groups=g)

        ref = f_einsum()
        assert torch.allclose(f_bmm(), ref, atol=1e-4)
        assert torch.allclose(f_conv()[0].t(), ref, atol=1e-4)
        useful = 2.0 * t_tokens * d * d / g
        res = {}
        for nm, fn in (("einsum", f_einsum), ("bmm", f_bmm), ("conv1d", f_conv)):
            med, mn, _ = timeit(fn, min_time=1.0, min_reps=10)
            res[nm] = dict(ms=med * 1e3, ms_min=mn * 1e3, gflops=useful / med / 1e9, cpu_ms=LAST_CPU_MS[0])
        best = min(res, key=lambda k: res[k]["ms"])
        best_of_min = min(res, key=lambda k: res[k]["ms_min"])
        rows.append(dict(T=t_tokens, D=d, g=g, best=best, best_ms=res[best]["ms"],
                         best_gflops=res[best]["gflops"], best_of_min=best_of_min,
                         best_ms_min=res[best_of_min]["ms_min"],
                         best_gflops_min=useful / (res[best_of_min]["ms_min"] / 1e3) / 1e9, methods=res))
        print(f"grouped g={g:3d}: best {best:6s} {res[best]['ms']:7.3f} ms {res[best]['gflops']:6.1f} useful GFLOP/s  "
              + "  ".join(f"{k} {v['ms']:.3f}/{v['ms_min']:.3f}" for k, v in res.items()) + " (median/min ms)")
    return rows


# ---------------------------------------------------------------------------


class GroupedBranch(nn.Module):
    """Linear layer + one grouped branch (g groups, bias), no reorder, no drop."""

    def __init__(self, linear, g):
        super().__init__()
        self.base = linear
        out_f, in_f = linear.weight.shape
        self.g = g
        self.weight = nn.Parameter(torch.empty(g, out_f // g, in_f // g).uniform_(-1e-3, 1e-3))
        self.bias = nn.Parameter(torch.empty(out_f).uniform_(-1e-3, 1e-3))

    def forward(self, x):
        y = self.base(x)
        lead = x.shape[:-1]
        xg = x.reshape(*lead, self.g, -1)
        yb = torch.einsum("...gi,goi->...go", xg, self.weight).reshape(*lead, -1)
        return y + yb + self.bias


def build_train_model(case):
    import timm
    from timm.models.vision_transformer import VisionTransformer
    if case["model"]:
        return timm.create_model(case["model"], pretrained=False, num_classes=case["num_classes"])
    return VisionTransformer(img_size=case["img"], patch_size=case["patch"], in_chans=case.get("in_chans", 3),
                             embed_dim=case["embed_dim"], depth=case["depth"], num_heads=case["num_heads"],
                             num_classes=case["num_classes"])


def run_train_case(case_name, mode, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    case = TRAIN_CASES[case_name]
    model = build_train_model(case)
    if mode == "consolidator":
        for p in model.parameters():
            p.requires_grad_(False)
        for blk in model.blocks:
            blk.attn.qkv = GroupedBranch(blk.attn.qkv, 8)
            blk.attn.proj = GroupedBranch(blk.attn.proj, 8)
            blk.mlp.fc1 = GroupedBranch(blk.mlp.fc1, 8)
            blk.mlp.fc2 = GroupedBranch(blk.mlp.fc2, 8)
        for p in model.head.parameters():
            p.requires_grad_(True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    x = torch.randn(case["batch"], case.get("in_chans", 3), case["img"], case["img"])
    y = torch.randint(0, case["num_classes"], (case["batch"],))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    med, mn, reps = timeit(step, min_time=3.0, min_reps=3, max_reps=30, warmup=1)
    return dict(case=case_name, mode=mode, batch=case["batch"], img=case["img"], ms=med * 1e3,
                ms_min=mn * 1e3, images_per_s=case["batch"] / med, reps=reps, cpu_ms=LAST_CPU_MS[0], trainable_params=n_train,
                total_params=n_total, peak_rss_mb=peak_rss_mb(), threads=threads)


def bench_train(threads):
    rows = []
    for case_name in TRAIN_CASES:
        for mode in ("full", "consolidator"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_train", case_name, mode,
                                  "--threads", str(threads)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"train {case_name:24s} {mode:12s}: median {row['ms']:9.1f} min {row['ms_min']:9.1f} ms/step  "
                  f"cpu {row['cpu_ms']:9.1f} ms/step  {row['images_per_s']:7.1f} img/s  "
                  f"trainable {row['trainable_params']:,}  peak RSS {row['peak_rss_mb']:.0f} MB")
    return rows


def combine_rounds(rounds):
    """rounds: list (one per round) of row lists in the same order. For each row keep the fields of the
    round with the smallest ms_min, plus ms_min_all / ms_median_all / ms_best_median: the min of the
    per-round mins, the median of the per-round medians and the best per-round median (what
    `consolidator bench --rounds N` reports for its own side)."""
    out = []
    for rows in zip(*rounds):
        if "methods" in rows[0]:  # grouped: combine per method, then pick the best
            methods = {}
            for nm in rows[0]["methods"]:
                per = [r["methods"][nm] for r in rows]
                best = dict(min(per, key=lambda v: v["ms_min"]))
                best["ms_median_all"] = statistics.median(v["ms"] for v in per)
                best["ms_min_all"] = min(v["ms_min"] for v in per)
                methods[nm] = best
            row = dict(rows[0], methods=methods, rounds=len(rows))
            useful = 2.0 * row["T"] * row["D"] * row["D"] / row["g"]
            b = min(methods, key=lambda k: methods[k]["ms_min_all"])
            row.update(best=b, best_ms=methods[b]["ms_median_all"], best_ms_min=methods[b]["ms_min_all"],
                       best_gflops=useful / (methods[b]["ms_median_all"] / 1e3) / 1e9,
                       best_gflops_min=useful / (methods[b]["ms_min_all"] / 1e3) / 1e9, best_of_min=b)
        else:
            row = dict(min(rows, key=lambda r: r["ms_min"]))
            row["ms_median_all"] = statistics.median(r["ms"] for r in rows)
            row["ms_best_median"] = min(r["ms"] for r in rows)
            row["ms_min_all"] = min(r["ms_min"] for r in rows)
            row["rounds"] = len(rows)
            if "gflops" in row:
                flop = 2.0 * row["m"] * row["k"] * row["n"]
                row["gflops_median_all"] = flop / (row["ms_median_all"] / 1e3) / 1e9
                row["gflops_best_all"] = flop / (row["ms_min_all"] / 1e3) / 1e9
                if "gflops_nn_best" in row:
                    row["gflops_nn_best_all"] = max(r["gflops_nn_best"] for r in rows)
        out.append(row)
    return out


def print_table(res):
    print("\n==== summary (min over all repeats and rounds = best observed; median of round medians) ====")
    for r in res.get("sgemm", []):
        print(f"sgemm {r['m']:5d}x{r['k']:5d}x{r['n']:5d}  best {r['gflops_best_all']:7.1f} GFLOP/s "
              f"({r['ms_min_all']:8.2f} ms)  median {r['gflops_median_all']:7.1f} GFLOP/s")
    for r in res.get("vit_fwd", []):
        print(f"{r['model']:22s} b{r['batch']:<3d} best {r['ms_min_all']:8.2f} ms  median {r['ms_median_all']:8.2f} ms")
    for r in res.get("grouped", []):
        print(f"grouped T={r['T']} D={r['D']} g={r['g']:3d}  best {r['best_of_min']:6s} {r['best_ms_min']:7.3f} ms "
              f"{r['best_gflops_min']:6.1f} useful GFLOP/s  median {r['best_ms']:7.3f} ms  "
              + " ".join(f"{k}={v['ms_min_all']:.3f}" for k, v in r["methods"].items()))
    for r in res.get("train", []):
        print(f"train {r['case']:24s} {r['mode']:12s} best {r['ms_min_all']:9.1f} ms/step  median "
              f"{r['ms_median_all']:9.1f}  trainable {r['trainable_params']:>10,}  peak RSS {r['peak_rss_mb']:.0f} MB")


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU baseline timings")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", choices=["sgemm", "vit_fwd", "grouped", "train"])
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every section this many times (interleaved) and keep the best / median")
    ap.add_argument("--_train", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_fwd", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._fwd:
        print(json.dumps(run_fwd_case(args._fwd[0], int(args._fwd[1]), args.threads)))
        return
    if args._train:
        print(json.dumps(run_train_case(args._train[0], args._train[1], args.threads)))
        return
    sections = args.only or ["sgemm", "vit_fwd", "grouped", "train"]
    res = {"machine": machine_info(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "loadavg_start": os.getloadavg()}
    torch.manual_seed(0)
    fns = {"sgemm": bench_sgemm, "vit_fwd": lambda: bench_vit_fwd(args.threads), "grouped": bench_grouped,
           "train": lambda: bench_train(args.threads)}
    per_round = {k: [] for k in sections}
    for rnd in range(args.rounds):
        print(f"---- round {rnd + 1}/{args.rounds}")
        for k in sections:
            per_round[k].append(fns[k]())
    for k in sections:
        res[k] = combine_rounds(per_round[k])
    res["rounds"] = args.rounds
    res["peak_rss_mb_main"] = peak_rss_mb()
    res["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["loadavg_end"] = os.getloadavg()
    res["notes"] = ("float32, CPU, torch.set_num_threads(%d); median of repeats after warm-up (ms_min = best); "
                    "random init, no pretrained weights; train = forward + CE + backward + AdamW; "
                    "consolidator case: backbone frozen, one g=8 branch (einsum) beside qkv/proj/fc1/fc2 in every "
                    "block, branches + head trainable; each train case in its own subprocess (peak RSS is that "
                    "process's ru_maxrss). loadavg_* are the machine's 1/5/15-min load averages: on a 2-CPU machine "
                    "shared with other jobs, a load above 2 means the medians include waiting for a CPU, and "
                    "ms_min (best repeat) is then the better estimate of uncontended speed. cpu_ms = process CPU time per "
                    "call summed over all threads (includes OpenMP spin-waiting)." % args.threads)
    print_table(res)
    print(f"peak RSS (main process, without the train subprocesses) {res['peak_rss_mb_main']:.0f} MB")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
