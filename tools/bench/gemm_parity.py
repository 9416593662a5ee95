#!/usr/bin/python3
"""PyTorch's side of `Loupe.Benchmarks.dll --gemm-parity ROUNDS 1`: vit_b_16's linear shapes (batch 1 and 8) by
`F.linear` (the BLAS torch links: OpenBLAS through libblas.so.3 on Debian) and by a 1×1 convolution over the same
memory, at ONE thread (torch and OpenBLAS), timed by the calling thread's CPU time, minimum over the rounds; then
hot (one weight) against cold (16 weights in turn) at the fc1 shape.

    /usr/bin/python3 tools/bench/gemm_parity.py [ROUNDS=9]
"""
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before torch loads the BLAS

import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| M×K×N | linear fwd | 1×1 conv fwd | linear fwd+bwd | conv fwd+bwd | linear fwd GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in (197, 1576):
        for k, n in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
            x, w, b = torch.randn(m, k), torch.randn(n, k) / k ** .5, torch.randn(n)
            w4 = w.reshape(n, k, 1, 1)
            lin = lambda t: F.linear(t, w, b)  # noqa: E731
            conv = lambda t: F.conv2d(t.t().reshape(1, k, m, 1), w4, b).reshape(n, m).t()  # noqa: E731

            def timed(f, backward):
                t = x.detach().requires_grad_(True) if backward else x
                start = time.thread_time()
                if backward:
                    torch.autograd.grad(f(t).sum(), t)[0].sum().item()
                else:
                    with torch.no_grad():
                        f(t).sum().item()
                return (time.thread_time() - start) * 1e3

            best = [float("inf")] * 4
            for r in range(rounds + 1):   # the first round warms up
                v = [timed(lin, False), timed(conv, False), timed(lin, True), timed(conv, True)]
                if r:
                    best = [min(a, c) for a, c in zip(best, v)]
            print(f"| {m}×{k}×{n} | {best[0]:.2f} ms | {best[1]:.2f} ms | {best[2]:.2f} ms | {best[3]:.2f} ms | "
                  f"{2 * m * k * n / best[0] / 1e6:.1f} |", flush=True)

    m, k, n = 197, 768, 3072
    ws = [torch.randn(n, k) / k ** .5 for _ in range(16)]
    b, x = torch.randn(n), torch.randn(m, k)

    def per_linear(cold):
        best = float("inf")
        with torch.no_grad():
            for _ in range(rounds):
                start = time.thread_time()
                for i in range(len(ws)):
                    F.linear(x, ws[i] if cold else ws[0], b)
                best = min(best, (time.thread_time() - start) * 1e3 / len(ws))
        return best

    for _ in range(2):
        print(f"{m}×{k}×{n}: hot {per_linear(False):.2f} ms, cold (16 weights) {per_linear(True):.2f} ms per linear")


if __name__ == "__main__":
    main()
