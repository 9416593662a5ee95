#!/usr/bin/env python3
"""Compares two Loupe run folders (the golden check for refactors: same pipeline, build before and after).

    /usr/bin/python3 tools/rundiff.py RUN_A RUN_B [--atol 0]

Every file of either folder is compared with its namesake in the other:
  - .npy: same dtype, shape and values (exactly, or within --atol);
  - .json (manifest, metrics, report data): equal after removing timings and host facts
    (keys named like *time*, *duration*, *Ms, started/finished, elapsed, host, command, memory, the random runId;
    of the environment only the contract and the plugins' names and versions) and replacing the run folders' own
    paths and ISO timestamps in strings;
  - .png and everything else: equal bytes, after the same path/timestamp replacement for text files (.html, .txt,
    .csv, .md, .log).
Exits 0 when the folders match, 1 with one line per difference otherwise.
"""
import argparse
import json
import os
import re
import sys

import numpy as np

VOLATILE_KEY = re.compile(r"(time|duration|seconds|elapsed|started|finished|^host$|^machine$|^pid$|^command$|_ms$|Ms$|memory|rss|^peak|^runId$)", re.I)
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?|\d{8}-\d{6}")
TEXT = {".html", ".txt", ".csv", ".md", ".log", ".yaml", ".svg"}


def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def scrub_text(s, root):
    s = s.replace(os.path.abspath(root), "<RUN>")
    return TIMESTAMP.sub("<TS>", s)


def scrub(value, root):
    if isinstance(value, dict) and "plugins" in value and "dotnet" in value:
        # The manifest's environment: the build's own facts (plugin paths and hashes) differ between two builds;
        # which plugins, their versions and the contract must not.
        return {"contract": value.get("contract"),
                "plugins": [{k: p.get(k) for k in ("name", "version", "contractVersion")} for p in value["plugins"]]}
    if isinstance(value, dict):
        return {k: scrub(v, root) for k, v in value.items() if not VOLATILE_KEY.search(k)}
    if isinstance(value, list):
        return [scrub(v, root) for v in value]
    if isinstance(value, str):
        return scrub_text(value, root)
    return value


def first_difference(a, b, path="$"):
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'B' if k not in a else 'A'}"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def compare(rel, a_root, b_root, atol):
    a, b = os.path.join(a_root, rel), os.path.join(b_root, rel)
    ext = os.path.splitext(rel)[1].lower()
    if ext == ".npy":
        x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"{x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.dtype.kind in "fc":
            diff = np.nanmax(np.abs(x - y)) if x.size else 0.0
            same_nan = np.array_equal(np.isnan(x), np.isnan(y))
            return None if same_nan and diff <= atol else f"max |a-b| = {diff:g}"
        return None if np.array_equal(x, y) else "values differ"
    if ext == ".json":
        with open(a, encoding="utf-8") as f:
            x = scrub(json.load(f), a_root)
        with open(b, encoding="utf-8") as f:
            y = scrub(json.load(f), b_root)
        return first_difference(x, y)
    if ext in TEXT:
        with open(a, encoding="utf-8", errors="replace") as f:
            x = scrub_text(f.read(), a_root)
        with open(b, encoding="utf-8", errors="replace") as f:
            y = scrub_text(f.read(), b_root)
        return None if x == y else "text differs"
    with open(a, "rb") as f, open(b, "rb") as g:
        return None if f.read() == g.read() else "bytes differ"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=0.0, help="tolerance for floating-point arrays (default: exact)")
    args = p.parse_args()
    fa, fb = files(args.a), files(args.b)
    problems = [f"only in A: {r}" for r in sorted(fa - fb)] + [f"only in B: {r}" for r in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        d = compare(rel, args.a, args.b, args.atol)
        if d:
            problems.append(f"{rel}: {d}")
    for line in problems:
        print(line)
    print(f"{len(fa & fb)} files compared, {len(problems)} differences")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
