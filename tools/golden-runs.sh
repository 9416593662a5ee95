#!/bin/bash
# Runs the configs/ pipelines used as the golden set of a refactor into DEST/<config>/ with the CLI in CLIDIR
# (copy hosts/Loupe.Cli/bin/Release/net10.0 aside first, so that a rebuild cannot change the build under test).
# Compare two such folders config by config with tools/rundiff.py:
#   tools/golden-runs.sh /tmp/before /tmp/cli-before; ...; tools/golden-runs.sh /tmp/after /tmp/cli-after
#   for c in /tmp/before/*/; do /usr/bin/python3 tools/rundiff.py "$c" "/tmp/after/$(basename "$c")"; done
set -u
dest=$1; cli=$2
cd "$(dirname "$0")/.."
mkdir -p "$dest"
for c in quickstart deeplift layer-attribution newer-cams shapley-surrogates vit-cam fashion-forward-onnx-runtime faithfulness image-folder; do
  s=$(date +%s)
  nice -n 10 dotnet "$cli/loupe.dll" run "configs/$c.yaml" --out "$dest/$c" > "$dest/$c.log" 2>&1
  echo "$c rc=$? $(( $(date +%s) - s ))s" >> "$dest/summary.txt"
done
