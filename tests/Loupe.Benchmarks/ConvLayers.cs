using System.Diagnostics;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--conv-layers [CALLS]</c>: single 3×3 stride-1 convolutions (the demo CNN's two inner layers at batch
/// 256, resnet18's four stages at batch 8) by libtorch's <c>conv2d</c> and by <see cref="DirectConvolution"/>, forward
/// and forward + input gradient, alternated, minimum of CALLS calls (default 9). Where TorchNative switched oneDNN off,
/// libtorch's is ATen's slow convolution; with <c>LOUPE_ONEDNN=keep</c>, oneDNN's.</summary>
public static class ConvLayers
{
    public static int Run(string[] args)
    {
        Bench.Init();
        Console.WriteLine($"oneDNN off (TorchNative): {TorchNative.Configure()}; direct kernel enabled: {DirectConvolution.Enabled}");
        int calls = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 9;
        (int N, int C, int O, int Side)[] layers = [(256, 32, 64, 14), (256, 64, 128, 7), (8, 64, 64, 56), (8, 128, 128, 28), (8, 256, 256, 14), (8, 512, 512, 7)];
        foreach (var (n, c, o, side) in layers)
        {
            manual_seed(0);
            var w = randn(o, c, 3, 3) * 0.05;
            var b = randn(o) * 0.1;
            var x = randn(n, c, side, side);
            var work = new Func<object>[]
            {
                () => nn.functional.conv2d(x, w, b, padding: [1, 1]),
                () => DirectConvolution.Forward(x, w, b, 1, 1, 1, 1),
                () => { var xi = x.detach().requires_grad_(true); return CheckedOps.Grad([nn.functional.conv2d(xi, w, b, padding: [1, 1]).sum()], [xi])[0]; },
                () => { var xi = x.detach().requires_grad_(true); return CheckedOps.Grad([DirectConvolution.Conv2d(xi, w, b, [1, 1], [1, 1]).sum()], [xi])[0]; },
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
            double gfma = (double)n * o * c * 9 * side * side / 1e9;
            Console.WriteLine($"{c}->{o} {side}x{side} batch {n}: forward libtorch {best[0]:F2} ms, direct {best[1]:F2} ms ({gfma / best[1] * 1000:F0} G multiply-adds/s, {best[0] / best[1]:F2}x); " +
                $"forward + input gradient libtorch {best[2]:F2} ms, direct {best[3]:F2} ms ({best[2] / best[3]:F2}x)");
        }
        return 0;
    }
}
