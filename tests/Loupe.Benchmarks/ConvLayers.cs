using System.Diagnostics;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--conv-layers [CALLS] [strided]</c>: single 3×3 stride-1 convolutions (the demo CNN's two inner layers at
/// batch 256, resnet18's four stages at batch 8) — with <c>strided</c>, resnet18's strided ones at batch 8 (the 7×7 stem,
/// the 3×3 and 1×1 stride-2 convolutions opening stages 2–4); with <c>pointwise</c>, resnet50's 1×1 stride-1 ones — by libtorch's <c>conv2d</c> and by <see cref="DirectConvolution"/>, forward
/// and forward + input gradient, alternated, minimum of CALLS calls (default 9). Where TorchNative switched oneDNN off,
/// libtorch's is ATen's slow convolution; with <c>LOUPE_ONEDNN=keep</c>, oneDNN's.</summary>
public static class ConvLayers
{
    public static int Run(string[] args)
    {
        Bench.Init();
        Console.WriteLine($"oneDNN off (TorchNative): {TorchNative.Configure()}; direct kernel enabled: {DirectConvolution.Enabled}");
        int calls = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 9;
        (int N, int C, int O, int Side, int K, int S)[] layers = args.Contains("strided")
            ? [(8, 3, 64, 224, 7, 2), (8, 64, 128, 56, 3, 2), (8, 64, 128, 56, 1, 2), (8, 128, 256, 28, 3, 2), (8, 128, 256, 28, 1, 2), (8, 256, 512, 14, 3, 2), (8, 256, 512, 14, 1, 2)]
            : args.Contains("pointwise")
            ? [(8, 64, 64, 56, 1, 1), (8, 64, 256, 56, 1, 1), (8, 256, 64, 56, 1, 1), (8, 256, 128, 28, 1, 1), (8, 128, 512, 28, 1, 1), (8, 512, 128, 28, 1, 1),
               (8, 512, 256, 14, 1, 1), (8, 256, 1024, 14, 1, 1), (8, 1024, 256, 14, 1, 1), (8, 1024, 512, 7, 1, 1), (8, 512, 2048, 7, 1, 1), (8, 2048, 512, 7, 1, 1)]
            : [(256, 32, 64, 14, 3, 1), (256, 64, 128, 7, 3, 1), (8, 64, 64, 56, 3, 1), (8, 128, 128, 28, 3, 1), (8, 256, 256, 14, 3, 1), (8, 512, 512, 7, 3, 1)];
        foreach (var (n, c, o, side, k, stride) in layers)
        {
            manual_seed(0);
            var w = randn(o, c, k, k) * 0.05;
            var b = randn(o) * 0.1;
            var x = randn(n, c, side, side);
            long[] st = [stride, stride], pad = [k / 2, k / 2], one = [1, 1];
            var work = new Func<object>[]
            {
                () => nn.functional.conv2d(x, w, b, st, pad),
                () => DirectConvolution.Conv2d(x, w, b, st, pad, one),
                () => { var xi = x.detach().requires_grad_(true); return CheckedOps.Grad([nn.functional.conv2d(xi, w, b, st, pad).sum()], [xi])[0]; },
                () => { var xi = x.detach().requires_grad_(true); return CheckedOps.Grad([DirectConvolution.Conv2d(xi, w, b, st, pad, one).sum()], [xi])[0]; },
            };
            var best = new double[work.Length];
            Array.Fill(best, double.MaxValue);
            for (int r = 0; r <= calls; r++)
                for (int j = 0; j < work.Length; j++)
                {
                    using var scope = NewDisposeScope();
                    var sw = Stopwatch.StartNew();
                    work[j]();
                    if (r > 0) best[j] = Math.Min(best[j], sw.Elapsed.TotalMilliseconds);
                }
            long outSide = (side + 2 * (k / 2) - k) / stride + 1;
            double gfma = (double)n * o * c * k * k * outSide * outSide / 1e9;
            Console.WriteLine($"{c}->{o} {side}x{side} {k}x{k} stride {stride} batch {n}: forward libtorch {best[0]:F2} ms, direct {best[1]:F2} ms ({gfma / best[1] * 1000:F0} G multiply-adds/s, {best[0] / best[1]:F2}x); " +
                $"forward + input gradient libtorch {best[2]:F2} ms, direct {best[3]:F2} ms ({best[2] / best[3]:F2}x)");
        }
        return 0;
    }
}
