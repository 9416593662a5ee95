#!/usr/bin/env python3
"""Joins BenchmarkDotNet's JSON results (Loupe) and python_bench.py's medians (Python) into one markdown table with
the ratio Loupe / Python per row. Used by tools/bench/side-by-side.sh.

Usage: combine.py BDN_RESULTS_DIR PYTHON_JSON [PYTHON_JSON ...]
With several Python runs (side-by-side.sh runs Python before and after Loupe, since this machine's speed drifts by
±20 % over minutes), each row uses the faster Python median: the ratio is the conservative one for Loupe."""
import glob, json, os, sys

# BenchmarkDotNet class -> row prefix (the model and batch the class benchmarks).
PREFIX = {
    "Resnet18Benchmarks": lambda params: f"resnet18 b{params.get('Batch', '8')}",
    "PathBenchmarks": lambda params: "resnet18 b1",
    "PerturbationCamBenchmarks": lambda params: "fashion-cnn b8",
    "SynthesisBenchmarks": lambda params: "fashion-cnn b10",
    "MaxPatchesBenchmarks": lambda params: "fashion-cnn 10k",
}
# Loupe descriptions whose Python row has another name.
ALIAS = {"20 steps, pixels, no transforms": "activation-max, 20 steps, pixels"}


def loupe_rows(results_dir):
    rows = {}
    for path in glob.glob(os.path.join(results_dir, "*.json")):
        doc = json.load(open(path))
        for b in doc.get("Benchmarks", []):
            cls = b.get("Type", "")
            if cls not in PREFIX:
                continue
            params = dict(p.split("=", 1) for p in b.get("Parameters", "").split("&") if "=" in p)
            desc = b.get("MethodTitle", b.get("Method", "")).strip("'")
            desc = ALIAS.get(desc, desc)
            median = b.get("Statistics", {}).get("Median")
            if median is not None:
                rows[f"{PREFIX[cls](params)} | {desc}"] = median / 1e6   # ns -> ms
    return rows


def rounds(out, n):
    """--rounds OUT N: round i is OUT/round-i (BenchmarkDotNet) and OUT/python-i.json; per row, the median of the
    per-round ratios (each round's two sides ran minutes apart) and their range."""
    import statistics
    pairs = [(loupe_rows(os.path.join(out, f"round-{i}", "BenchmarkDotNet.Artifacts", "results")),
              json.load(open(os.path.join(out, f"python-{i}.json")))) for i in range(1, n + 1)]
    print(f"| model, batch | work (same model, input, batch, 2 threads) | Loupe median | Python median | Loupe / Python (median of {n} rounds) | per-round ratios |")
    print("|---|---|---:|---:|---:|---|")
    worst, count = 0.0, 0
    for name in pairs[0][1]:
        got = [(l[name], p[name]) for l, p in pairs if name in l and name in p]
        if not got:
            continue
        ratios = [a / b for a, b in got]
        med = statistics.median(ratios)
        worst, count = max(worst, med), count + 1
        row = name.split(" | ", 1)
        print(f"| {row[0]} | {row[1]} | {statistics.median(a for a, _ in got):.1f} ms | {statistics.median(b for _, b in got):.1f} ms | "
              f"**{med:.2f}×** | {' / '.join(f'{x:.2f}' for x in ratios)} |")
    print(f"\nrows: {count}, worst median ratio {worst:.2f}×")


def main():
    if sys.argv[1] == "--rounds":
        rounds(sys.argv[2], int(sys.argv[3]))
        return
    loupe = loupe_rows(sys.argv[1])
    runs = [json.load(open(p)) for p in sys.argv[2:]]
    python = {name: min(r[name] for r in runs if name in r) for name in runs[0]}
    multi = len(runs) > 1
    print("| model, batch | work (same model, input, batch, 2 threads) | Loupe median | Python median" + (" (faster of %d runs: %s)" % (len(runs), " / ".join(f"run {i + 1}" for i in range(len(runs)))) if multi else "") + " | Loupe / Python |")
    print("|---|---|---:|---:|---:|")
    worst = 0.0
    for name in python:
        each = " (" + " / ".join(f"{r[name]:.1f}" for r in runs if name in r) + ")" if multi else ""
        if name not in loupe:
            print(f"| {name} | — | {python[name]:.1f} ms{each} | (no Loupe row) |")
            continue
        r = loupe[name] / python[name]
        worst = max(worst, r)
        print(f"| {name} | {loupe[name]:.1f} ms | {python[name]:.1f} ms{each} | **{r:.2f}×** |")
    print(f"\nrows: {sum(1 for n in python if n in loupe)}, worst ratio {worst:.2f}×")


if __name__ == "__main__":
    main()
