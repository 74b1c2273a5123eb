#!/usr/bin/env bash
# Side-by-side speed table against PyTorch on this machine (optional; no test uses it).
#
#   scripts/bench_compare.sh [ROUNDS]      (default 2)
#
# Needs a Python with torch and timm (scripts/requirements-fixtures.txt; PYTHON overrides the
# interpreter, default /root/venv-fixtures/bin/python). Runs the PyTorch workloads
# (scripts/bench_torch.py --rounds ROUNDS -> bench/torch_baseline.json), then the same workloads
# here (consolidator bench all --rounds ROUNDS --torch bench/torch_baseline.json) and writes
# bench/versus.md (the tables; `--json` on the bench command gives the same as JSON). On a shared machine, more rounds make the
# best-of numbers of both sides less dependent on what the neighbours were doing.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
python="${PYTHON:-/root/venv-fixtures/bin/python}"
cargo build --release --quiet
{
  echo "# consolidator vs PyTorch, $(date -u +%Y-%m-%dT%H:%MZ), $rounds round(s) each"
  echo
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > bench/versus.md
"$python" scripts/bench_torch.py --rounds "$rounds" --json bench/torch_baseline.json > /dev/null
./target/release/consolidator bench all --rounds "$rounds" --torch bench/torch_baseline.json >> bench/versus.md
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> bench/versus.md
echo "wrote bench/versus.md and bench/torch_baseline.json"
