"""The four comparisons README states, recomputed from sweep.csv (one row per run and seed).

    python3 results/sweep/findings.py results/sweep/sweep.csv > results/sweep/findings.md

A chosen setting is the (lr, dp) of a (task, config) that has seed runs beyond seed 0 (the
selection `suite --gather` made on validation); its seeds are averaged. Two protocols: ours
(the last epoch's test accuracy) and the paper's (the best test accuracy over the evaluations
every 10 epochs). Standard library only.
"""
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
by_setting = defaultdict(list)
for r in rows:
    by_setting[(r["task"], r["config"], r["lr"], r["dp"])].append(r)
chosen = {}
for (task, config, lr, dp), rs in by_setting.items():
    if any(r["seed"] != "0" for r in rs):
        chosen[(task, config)] = sorted(rs, key=lambda r: int(r["seed"]))
tasks = sorted({t for t, _ in chosen})
configs = sorted({c for _, c in chosen})


def acc(task, config, col="test_acc"):
    return [100 * float(r[col]) for r in chosen[(task, config)]]


def stored(config):
    return max(int(r["stored_bytes"]) for (t, c), rs in chosen.items() if c == config for r in rs)


def mean_over_tasks(config, col="test_acc"):
    return statistics.mean(statistics.mean(acc(t, config, col)) for t in tasks)


def cell(task, config, col="test_acc"):
    v = acc(task, config, col)
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.1f} ± {sd:.1f}"


def pair(a, b, title):
    print(f"### {title}\n")
    print(f"| task | {a} | {b} | difference (ours) | difference (paper's protocol) | seeds where {a} wins |")
    print("|---|---:|---:|---:|---:|---:|")
    wins_t, n_t = 0, 0
    for t in tasks:
        va, vb = acc(t, a), acc(t, b)
        d = statistics.mean(va) - statistics.mean(vb)
        dp = statistics.mean(acc(t, a, "best_test_every_eval")) - statistics.mean(acc(t, b, "best_test_every_eval"))
        w = sum(x > y for x, y in zip(va, vb))
        wins_t += w
        n_t += min(len(va), len(vb))
        print(f"| {t} | {cell(t, a)} | {cell(t, b)} | {d:+.1f} | {dp:+.1f} | {w}/{min(len(va), len(vb))} |")
    m = mean_over_tasks(a) - mean_over_tasks(b)
    mp = mean_over_tasks(a, "best_test_every_eval") - mean_over_tasks(b, "best_test_every_eval")
    print(f"| **mean** | {mean_over_tasks(a):.1f} | {mean_over_tasks(b):.1f} | **{m:+.1f}** | {mp:+.1f} | {wins_t}/{n_t} |")
    print(f"\nStored per task: {a} {stored(a):,} B, {b} {stored(b):,} B.\n")


print("# Findings of the budget sweep\n")
print("Test accuracy (%), mean ± sd over seeds of the setting chosen on validation; differences in points.\n")
print("## Every config: mean over the tasks, against stored bytes\n")
print("| config | stored per task (B) | mean, ours | mean, paper's protocol | protocol adds |")
print("|---|---:|---:|---:|---:|")
for c in sorted(configs, key=stored):
    a, p = mean_over_tasks(c), mean_over_tasks(c, "best_test_every_eval")
    print(f"| {c} | {stored(c):,} | {a:.1f} | {p:.1f} | {p - a:+.1f} |")
print()
print("## (a) Multi-branch against one branch at equal stored bytes\n")
pair("consolidator-g8+16+32", "consolidator-g8", "g = 8+16+32 (reorder off) against g = 8 alone")
print("## (d) Reorder on against off\n")
pair("consolidator-g8+16+32r", "consolidator-g8+16+32", "g = 8+16+32 with reorder against without")
print("## (b), (c) The consolidator against every other method, by stored bytes\n")
cons = [c for c in configs if c.startswith("consolidator")]
others = [c for c in configs if not c.startswith("consolidator")]
print("For each consolidator config: the best other config (by mean test accuracy) that stores no more bytes, and the best one overall.\n")
print("| consolidator config | stored (B) | mean | best other at ≤ its bytes | its mean | best other overall | its mean |")
print("|---|---:|---:|---|---:|---|---:|")
for c in sorted(cons, key=stored):
    le = [o for o in others if stored(o) <= stored(c)]
    best_le = max(le, key=mean_over_tasks) if le else None
    best = max(others, key=mean_over_tasks)
    b_le = f"{best_le} ({stored(best_le):,} B)" if best_le else "–"
    m_le = f"{mean_over_tasks(best_le):.1f}" if best_le else "–"
    print(f"| {c} | {stored(c):,} | {mean_over_tasks(c):.1f} | {b_le} | {m_le} | {best} ({stored(best):,} B) | {mean_over_tasks(best):.1f} |")
print()
pair(max(cons, key=mean_over_tasks), "full", "The best consolidator config against full fine-tuning")
