"""Does a Loupe call right after a Python call run slower? The evidence behind python_bench.round_order.

Starts tests/Loupe.Benchmarks --serve, then times one Loupe row (default: the ROAD floor of the demo CNN) `pause`
seconds after a Python call of the same work and after nothing, for several pauses, `calls` times each, and prints
the medians and every time. On the 2-core VM of 2026-12-05 the floor read a median of 15-22 ms within 50-600 ms of
Python's ROAD call and 9-17 ms otherwise (its calls are bimodal, ~8 or ~18 ms). Not part of CI:
    /usr/bin/python3 tools/bench/round_order_probe.py [CALLS=12] [ROW=fashion-cnn b8 | road, 5 percentages]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import python_bench as pb  # noqa: E402
import torch  # noqa: E402


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    row = sys.argv[2] if len(sys.argv) > 2 else "fashion-cnn b8 | road, 5 percentages"
    torch.set_num_threads(2)
    python = dict((name, fn) for name, fn, _ in pb.define_rows() if name == row)[row]
    dll = os.path.join(pb.ROOT, "tests", "Loupe.Benchmarks", "bin", "Release", "net10.0", "Loupe.Benchmarks.dll")
    server = pb.LoupeServer(dll)
    try:
        timed = server.floor.get(row) or row
        pb.warm(lambda: server.run(timed)[0])
        pb.warm(python)
        for pause in (0.05, 0.15, 0.3, 0.6):
            for after in ("nothing", "python"):
                t = []
                for _ in range(calls):
                    if after == "python":
                        python()
                    time.sleep(pause)
                    t.append(server.run(timed)[0])
                print(f"{timed}: {pause * 1000:.0f} ms after {after:7s}: median {statistics.median(t):.1f} ms  "
                      + " ".join(f"{v:.0f}" for v in t), flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
