#!/usr/bin/env bash
# Loupe against the Python tools people would use instead, in one run, on the same machine and threads.
#   1. Python (Debian python3-torch 1.13 / torchvision 0.14; tools/bench/python_bench.py): median ms per row.
#   2. Loupe (tests/Loupe.Benchmarks, BenchmarkDotNet in-process, 15 iterations, medians) for the same rows.
#   3. Python again (the machine's speed drifts over minutes; each row keeps the faster of the two Python runs).
#   4. tools/bench/combine.py: one markdown table with Loupe / Python per row -> bench-side-by-side/table.md.
# Needs: bash scripts/setup.sh --fixtures (python3-torch, python3-torchvision). Run on an otherwise idle machine
# (~20 min on 2 cores). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-bench-side-by-side}")
mkdir -p "$out"
py=/usr/bin/python3
"$py" tools/bench/python_bench.py --threads 2 > "$out/python.json"
dotnet build tests/Loupe.Benchmarks -c Release -v q
root=$PWD
( cd "$out" && dotnet "$root/tests/Loupe.Benchmarks/bin/Release/net10.0/Loupe.Benchmarks.dll" \
    --filter '*Resnet18Benchmarks*' '*PathBenchmarks*' '*.PerturbationCamBenchmarks*' '*SynthesisBenchmarks.PixelSteps*' \
             '*SynthesisBenchmarks.ForwardBackward*' '*MaxPatchesBenchmarks*' --exporters json )
# Python again after Loupe: the machine's speed drifts over minutes; combine.py keeps each row's faster Python run.
"$py" tools/bench/python_bench.py --threads 2 > "$out/python-after.json"
"$py" tools/bench/combine.py "$out/BenchmarkDotNet.Artifacts/results" "$out/python.json" "$out/python-after.json" | tee "$out/table.md"
