#!/usr/bin/env bash
# Side-by-side speed table against PyTorch on this machine (optional; no test uses it).
#
#   scripts/bench_compare.sh [ROUNDS]      (default 3)
#
# Needs a Python with torch and timm: PYTHON names the interpreter (default: python3 on PATH);
# README ("Speed") says how to make that environment from scripts/requirements-fixtures.txt.
# Every round runs the PyTorch workloads
# (scripts/bench_torch.py -> bench/torch_baseline.json) and then the same workloads here, so
# the two take turns on the machine; each side keeps its best round per workload
# (`consolidator bench all --rounds N --torch FILE --torch-run CMD`). Writes bench/versus.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import torch, timm' 2>/dev/null; then
  echo "bench_compare: $python cannot import torch and timm; set PYTHON to a Python that can" >&2
  echo "  (python3 -m venv DIR && DIR/bin/pip install -r scripts/requirements-fixtures.txt)" >&2
  exit 1
fi
cargo build --release --quiet
out=bench/versus.md
{
  echo "# consolidator vs PyTorch, $(date -u +%Y-%m-%dT%H:%MZ), best of $rounds alternating round(s)"
  echo
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
       "$("$python" -c 'import torch; print("torch", torch.__version__)'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > "$out.tmp"
./target/release/consolidator bench all --rounds "$rounds" --torch bench/torch_baseline.json \
  --torch-run "$python scripts/bench_torch.py --json bench/torch_baseline.json > /dev/null" >> "$out.tmp"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out (and bench/torch_baseline.json, PyTorch's last round)"
