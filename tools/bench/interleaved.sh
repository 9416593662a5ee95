#!/usr/bin/env bash
# Loupe against Python in alternating rounds, for a machine whose speed drifts over minutes (this one: ±20-40 %).
# Each round runs every Python row (tools/bench/python_bench.py, 7 repeats) and then every Loupe row
# (tests/Loupe.Benchmarks, 7 iterations); tools/bench/combine.py --rounds pairs each round's Loupe and Python medians
# and reports, per row, the median of the per-round ratios and their range.
#   bash tools/bench/interleaved.sh [OUT_DIR] [ROUNDS=3]        (~7 min per round on 2 cores; not part of CI)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-bench-interleaved}")
rounds=${2:-3}
py=/usr/bin/python3
mkdir -p "$out"
dotnet build tests/Loupe.Benchmarks -c Release -v q
root=$PWD
for r in $(seq 1 "$rounds"); do
  "$py" tools/bench/python_bench.py --threads 2 --repeats 7 > "$out/python-$r.json"
  mkdir -p "$out/round-$r"
  ( cd "$out/round-$r" && dotnet "$root/tests/Loupe.Benchmarks/bin/Release/net10.0/Loupe.Benchmarks.dll" --iterations 7 \
      --filter '*Resnet18Benchmarks*' '*PathBenchmarks*' '*.PerturbationCamBenchmarks*' '*SynthesisBenchmarks.PixelSteps*' \
               '*SynthesisBenchmarks.ForwardBackward*' '*MaxPatchesBenchmarks*' --exporters json > log.txt )
done
"$py" tools/bench/combine.py --rounds "$out" "$rounds" | tee "$out/table.md"
