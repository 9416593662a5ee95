#!/usr/bin/python3
"""PyTorch's side of `Loupe.Benchmarks.dll --cpu-onnx NAME BATCH ROUNDS`: the transformer / modern-CNN rows of
python_bench.py (export_models.py's models, same weights) at ONE intra-op thread (torch and OpenBLAS), timed by the
calling thread's CPU time, minimum over the rounds. CPU time barely moves when other processes share the cores, so the
two sides can be compared on a loaded machine; it measures the work, not how well two threads share it.

    /usr/bin/python3 tools/bench/cpu_time.py [NAME=vit_b_16] [BATCH=1] [ROUNDS=5]
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before torch loads the BLAS

import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_models import bench_model  # noqa: E402
from python_bench import input_gradient, top_class  # noqa: E402


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "vit_b_16"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    torch.set_num_threads(1)
    model = bench_model(name)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224)
    cls = top_class(model, x)

    def fwd():
        with torch.no_grad():
            model(x)

    for row, fn in (("forward (no grad)", fwd), ("forward+backward to input", lambda: input_gradient(model, x, cls))):
        fn()
        best = float("inf")
        for _ in range(rounds):
            start = time.thread_time()
            fn()
            best = min(best, time.thread_time() - start)
        print(f"{name} b{batch} | {row} | {best * 1e3:.1f} ms thread CPU (1 thread, min of {rounds})", flush=True)


if __name__ == "__main__":
    main()
