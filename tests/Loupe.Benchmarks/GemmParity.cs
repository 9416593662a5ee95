using System.Diagnostics;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary><c>--gemm-parity [ROUNDS]</c>: the GEMMs of vit_b_16 (its four linear shapes at batch 1 and 8) run by
/// libtorch's <c>linear</c> (addmm: the BLAS libtorch links) and by a 1×1 convolution over the same memory (oneDNN),
/// alternated call by call at 2 threads, forward and forward+backward to the input. Prints per shape the median time
/// of each and their ratio: a relative measurement that stays meaningful on a loaded machine. <c>--gemm-parity R 1</c>:
/// one thread, thread CPU time (minimum), plus hot against cold weights; <c>--gemm-parity 1 api</c>: one linear per
/// input rank, to read the BLAS entry point each reaches with <c>MKL_VERBOSE=1</c>.</summary>
public static class GemmParity
{
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    struct TimeSpec { public long Seconds, Nanoseconds; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGetTime(int clock, out TimeSpec t);

    /// <summary>CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in ms: with one intra-op thread libtorch
    /// computes on the caller's thread.</summary>
    internal static double ThreadCpuMs() => ClockGetTime(3, out var t) == 0 ? t.Seconds * 1e3 + t.Nanoseconds / 1e6 : throw new InvalidOperationException("clock_gettime failed");

    public static int Run(string[] args)
    {
        Bench.Init();
        int rounds = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 9;
        // --gemm-parity ROUNDS 1: one intra-op thread and process CPU time instead of wall time, which a loaded
        // machine barely disturbs (the time a thread waits for a core is not counted); the minimum over the rounds is printed.
        bool cpu = args.Length > 1 && args[1] == "1";
        if (cpu) TorchSharp.torch.set_num_threads(1);
        double Now() => cpu ? ThreadCpuMs() : Stopwatch.GetTimestamp() * 1000.0 / Stopwatch.Frequency;
        if (args.Length > 1 && args[1] == "api")
        {
            // Which BLAS entry a linear reaches (run with MKL_VERBOSE=1): 2-D input, 3-D input, 3-D input requiring grad.
            using var scope = NewDisposeScope();
            var (w, b, x) = (randn(3072, 768), randn(3072), randn(197, 768));
            foreach (var (name, t) in new[] { ("2-D", x), ("3-D [1,197,768]", x.unsqueeze(0)), ("3-D [197,1,768]", x.unsqueeze(1)), ("3-D, grad", x.unsqueeze(0).requires_grad_(true)) })
            {
                Console.WriteLine($"--- linear on {name} input");
                Console.Out.Flush();
                F.linear(t, w, b).sum().item<float>();
            }
            return 0;
        }
        if (args.Length > 1 && args[1] == "layout") return Layouts(rounds);
        if (cpu)
        {
            // Hot (one weight) against cold (16 weights in turn, 151 MB) at vit_b_16's fc1 shape, batch 1.
            using var scope = NewDisposeScope();
            long m = 197, k = 768, n = 3072;
            var ws = Enumerable.Range(0, 16).Select(_ => randn(n, k) / Math.Sqrt(k)).ToArray();
            var (b, x) = (randn(n), randn(m, k));
            double PerLinear(bool cold)
            {
                double best = double.MaxValue;
                using var _ = no_grad();
                for (int r = 0; r < rounds; r++)
                {
                    using var s = NewDisposeScope();
                    double start = Now();
                    for (int i = 0; i < ws.Length; i++) F.linear(x, ws[cold ? i : 0], b);
                    best = Math.Min(best, (Now() - start) / ws.Length);
                }
                return best;
            }
            for (int i = 0; i < 2; i++) Console.WriteLine($"{m}×{k}×{n}: hot {PerLinear(false):F2} ms, cold (16 weights) {PerLinear(true):F2} ms per linear");
        }
        Console.WriteLine("| M×K×N | linear fwd | 1×1 conv fwd | conv / linear | linear fwd+bwd | conv fwd+bwd | conv / linear |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (long m in new long[] { 197, 1576 })
            foreach (var (k, n) in new (long, long)[] { (768, 2304), (768, 768), (768, 3072), (3072, 768) })
            {
                using var scope = NewDisposeScope();
                var x = randn(m, k);
                var w = randn(n, k) / Math.Sqrt(k);
                var b = randn(n);
                var w4 = w.reshape(n, k, 1, 1);
                // [M,K] contiguous = an N=1, C=K, H=M, W=1 image in channels-last strides; the output comes back [M,N].
                Tensor Linear(Tensor t) => F.linear(t, w, b);
                Tensor Conv(Tensor t) => F.conv2d(t.t().reshape(1, k, m, 1), w4, b).reshape(n, m).t();
                double Time(Func<Tensor, Tensor> f, bool backward)
                {
                    using var s = NewDisposeScope();
                    var t = backward ? x.detach().requires_grad_(true) : x;
                    double start = Now();
                    if (backward) CheckedOps.Grad([f(t).sum()], [t])[0].sum().item<float>();
                    else using (no_grad()) f(t).sum().item<float>();
                    return Now() - start;
                }
                var check = (Conv(x) - Linear(x)).abs().max().item<float>() / Linear(x).abs().max().item<float>();
                if (check > 1e-5) throw new InvalidOperationException($"1×1 conv differs from linear by {check} (relative)");
                var times = new List<double>[4];
                for (int i = 0; i < 4; i++) times[i] = [];
                for (int r = -1; r < rounds; r++)
                {
                    var t = new[] { Time(Linear, false), Time(Conv, false), Time(Linear, true), Time(Conv, true) };
                    if (r >= 0) for (int i = 0; i < 4; i++) times[i].Add(t[i]);
                }
                // Median of wall times; with thread CPU time the minimum (interference by other processes only adds to it).
                double Med(List<double> l) { l.Sort(); return cpu ? l[0] : l[l.Count / 2]; }
                double lf = Med(times[0]), cf = Med(times[1]), lb = Med(times[2]), cb = Med(times[3]);
                Console.WriteLine($"| {m}×{k}×{n} | {lf:F2} ms | {cf:F2} ms | {cf / lf:F2}× | {lb:F2} ms | {cb:F2} ms | {cb / lb:F2}× |");
            }
        return 0;
    }

    /// <summary><c>--gemm-parity ROUNDS layout</c>: the same linear (vit_b_16's in-projection, 197×768×2304) on the
    /// layouts the onnx interpreter hands it, with the weight in either layout and as a 1×1 convolution over
    /// channels-last rows (oneDNN), forward and forward+backward to the input; one thread, thread CPU time, minimum over
    /// the rounds of 8 calls each. Found the transpose view that makes libtorch's N-D linear leave the one-GEMM path.</summary>
    static int Layouts(int rounds)
    {
        TorchSharp.torch.set_num_threads(1);
        using var scope = NewDisposeScope();
        var (w, b, x) = (randn(2304, 768) / Math.Sqrt(768), randn(2304), randn(197, 768));
        var wkn = w.t().contiguous();
        var w4 = w.reshape(2304, 768, 1, 1);
        double Best(Tensor input, bool backward, Func<Tensor, Tensor> run)
        {
            double best = double.MaxValue;
            for (int r = 0; r < rounds; r++)
            {
                using var s = NewDisposeScope();
                var xin = input.detach().requires_grad_(backward);
                using var ng = backward ? null : no_grad();
                double start = ThreadCpuMs();
                for (int i = 0; i < 8; i++)
                {
                    var y = run(xin);
                    if (backward) CheckedOps.Grad([y], [xin], [ones_like(y)]);
                }
                best = Math.Min(best, (ThreadCpuMs() - start) / 8);
            }
            return best;
        }
        var ways = new (string, Func<Tensor, Tensor>)[]
        {
            ("linear, N×K weight", t => F.linear(t, w, b)),
            ("addmm, K×N weight", t => addmm(b, t, wkn, 1f, 1f)),
            ("1×1 conv over channels-last rows", t => F.conv2d(t.reshape(1, 197, 1, 768).permute(0, 3, 1, 2), w4, b).permute(0, 2, 3, 1).reshape(197, 2304)),
        };
        foreach (var (label, run) in ways)
            foreach (var backward in new[] { false, true })
                Console.WriteLine($"{label}{(backward ? ", forward+backward" : "")}: {Best(x, backward, run):F2} ms");
        var inputs = new (string, Tensor)[]
        {
            ("2-D [197,768]", x), ("[1,197,768]", x.unsqueeze(0)), ("[197,1,768] view of a transpose", x.unsqueeze(0).transpose(0, 1)),
            ("[197,1,768] contiguous", x.unsqueeze(1)), ("[197,1,768] transpose view, reshaped 2-D", x.unsqueeze(0).transpose(0, 1).reshape(197, 768)),
        };
        foreach (var backward in new[] { false, true })
            foreach (var (name, t) in inputs)
            {
                // detach() keeps the view's strides: the layout is what is measured.
                Console.WriteLine($"linear on {name}{(backward ? ", forward+backward" : "")}: {Best(t, backward, v => F.linear(v, w, b)):F2} ms (strides {string.Join(",", t.stride())})");
            }
        return 0;
    }
}
