#!/usr/bin/env bash
# Runs the fuzzer over every target, one after another, single-threaded and niced (see docs/reliability.md).
#   bash tools/Loupe.Fuzz/run-all.sh [MINUTES=10] [OUT=fuzz-out] [TARGETS="onnx onnx-runtime idx npy yaml safetensors pt image manifest"]
# Each target runs from a fresh copy of the latest build. When an input kills the process (a native abort or a
# stack overflow) or hangs, that input is kept as abort-<sha>.<ext> and fuzzing resumes with the next seed until
# the target's minutes are used up.
set -u
minutes=${1:-10}
out=$(realpath -m "${2:-fuzz-out}")
targets=${3:-"onnx onnx-runtime idx npy yaml safetensors pt image manifest"}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
for t in $targets; do
  bin="$out/bin-$t"
  rm -rf "$bin" && cp -r "$root/tools/Loupe.Fuzz/bin/Release/net10.0" "$bin"
  echo "== $t $(date -u +%H:%M:%S)" | tee -a "$out/summary.txt"
  start=$(date +%s); seed=1
  while :; do
    left=$(( minutes * 60 - ($(date +%s) - start) ))
    [ "$left" -le 5 ] && break
    (cd "$root" && nice -n 10 dotnet "$bin/loupe-fuzz.dll" --target "$t" --fuzz-minutes "$(echo "scale=2; $left/60" | bc)" --seed $seed --out "$out") >> "$out/$t.log" 2>&1
    rc=$?
    echo "exit $rc (seed $seed)" >> "$out/$t.log"
    for f in "$out/$t"/inflight.*; do
      [ -e "$f" ] || continue
      h=$(sha256sum "$f" | cut -c1-12); mv "$f" "$out/$t/abort-$h.${f##*.}"
      echo "  ABORT rc=$rc input abort-$h.${f##*.}" | tee -a "$out/summary.txt"
    done
    [ "$rc" -le 1 ] && break
    seed=$((seed + 1))
  done
  echo "  wall $(( $(date +%s) - start )) s" >> "$out/summary.txt"
  grep -E "^RESULT|^  [0-9]+ ×" "$out/$t.log" | tee -a "$out/summary.txt"
  rm -rf "$bin"
done
