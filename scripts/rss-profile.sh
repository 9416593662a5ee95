#!/usr/bin/env bash
# Runs `loupe run PIPELINE [args]` and samples its resident memory every 0.5 s.
# Prints the peak and the RSS at each quarter of the run; writes the samples to rss.csv in the run's output folder.
# Usage: bash scripts/rss-profile.sh configs/fashion-train-60k.yaml [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cli=hosts/Loupe.Cli/bin/Release/net10.0/loupe
[ -x "$cli" ] || { echo "build first: dotnet build hosts/Loupe.Cli -c Release" >&2; exit 2; }
samples=$(mktemp)
"$cli" run "$@" --json > "$samples.json" &
pid=$!
start=$(date +%s%N)
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss" ] && echo "$(( ($(date +%s%N) - start) / 1000000 )),$rss" >> "$samples"
  sleep 0.5
done
code=0; wait "$pid" || code=$?
out=$(python3 -c "import json,sys; print(json.load(open('$samples.json')).get('outDir',''))" 2>/dev/null || true)
{ echo "ms,rss_kb"; cat "$samples"; } > "${out:-.}/rss.csv"
python3 - "$samples" <<'PY'
import sys
rows=[(float(a)/1000,float(b)) for a,b in (l.split(',') for l in open(sys.argv[1]) if l.strip())]
peak=max(r[1] for r in rows)
print(f"samples {len(rows)}, wall {rows[-1][0]:.1f} s, peak RSS {peak/1024/1024:.2f} GB")
n=len(rows)
for q in (0.25,0.5,0.75,0.95):
    t,r=rows[min(n-1,int(q*n))]
    print(f"  at {q:.0%} of the run ({t:.0f} s): {r/1024/1024:.2f} GB")
PY
exit $code
