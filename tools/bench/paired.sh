#!/usr/bin/env bash
# Loupe against Python, call by call: python_bench.py --paired starts tests/Loupe.Benchmarks in --serve mode and, per
# row, alternates one Python call, one Loupe call and one call of the Loupe row of the passes the technique needs
# (rotating order, 50 ms apart), so every ratio compares calls made within seconds of each other — this machine's
# speed drifts by ±20-40 % over minutes, which sequential runs cannot separate from the effects measured.
#   bash tools/bench/paired.sh [OUT_DIR] [REPEATS=15] [ONLY=substring]   (~8 min on 2 cores; not part of CI)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-bench-paired}")
repeats=${2:-15}
only=${3:-}
mkdir -p "$out"
# Debian's PyTorch without OpenBLAS runs the reference BLAS, many times slower: the Python side would not be PyTorch's.
if ! dpkg -s libopenblas0-pthread >/dev/null 2>&1 && ! dpkg -s libopenblas0-openmp >/dev/null 2>&1; then
  echo "paired.sh: warning: no OpenBLAS for /usr/bin/python3's torch (reference BLAS): run 'bash scripts/setup.sh --bench' first" >&2
fi
dotnet build tests/Loupe.Benchmarks -c Release -v q
/usr/bin/python3 tools/bench/python_bench.py --threads 2 --repeats "$repeats" --only "$only" \
  --paired tests/Loupe.Benchmarks/bin/Release/net10.0/Loupe.Benchmarks.dll > "$out/paired.json" 2> >(tee "$out/log.txt" >&2)
/usr/bin/python3 - "$out/paired.json" "$repeats" > "$out/table.md" <<'PY'
import json, sys
sys.path.insert(0, "tools/bench")
from python_bench import table
print(table(json.load(open(sys.argv[1])), int(sys.argv[2])))
PY
echo "table: $out/table.md"
