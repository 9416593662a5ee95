using System.Diagnostics;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--batch-sweep [fashion | resnet18] [TOTAL] [ROUNDS]</c>: the forward of TOTAL copies (no gradients) split into
/// passes of each size, per copy, rotated over the sizes ROUNDS times (medians): how the copies-per-pass policy
/// (<see cref="Explain.CopiesPerForward"/>) trades a pass's per-call overhead against its working set. Prints each size's
/// activation bytes (<see cref="Explain.BytesPerInput"/> × size).</summary>
public static class BatchSweep
{
    /// <summary>Runs the sweep and prints one line per pass size.</summary>
    public static int Run(string[] args)
    {
        Bench.Init();
        bool resnet = args.Length > 0 && args[0] == "resnet18";
        int total = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : (resnet ? 64 : 2048);
        int rounds = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 5;
        using var model = resnet ? Bench.Resnet18() : Bench.Fashion();
        long[] shape = resnet ? [1, 3, 224, 224] : [1, 1, 28, 28];
        manual_seed(0);
        using var x = randn([total, .. shape.Skip(1)]);
        long per = Explain.BytesPerInput(model, shape);
        int[] sizes = resnet ? [1, 2, 4, 8, 16, 32, 64] : [8, 16, 32, 64, 128, 256, 512, 1024, 2048];
        sizes = sizes.Where(s => s <= total).ToArray();
        var times = sizes.Select(_ => new List<double>()).ToArray();
        void Pass(int size)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            for (int at = 0; at < total; at += size) model.Forward(x.narrow(0, at, Math.Min(size, total - at))).sum().item<float>();
        }
        foreach (var s in sizes) Pass(s);   // warm-up
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < sizes.Length; j++)
            {
                var sw = Stopwatch.StartNew();
                Pass(sizes[j]);
                times[j].Add(sw.Elapsed.TotalMilliseconds);
            }
        Console.WriteLine($"{(resnet ? "resnet18 224²" : "fashion-cnn 28²")}: {total} copies, {per / 1024.0:F0} KiB of activations per copy");
        for (int j = 0; j < sizes.Length; j++)
        {
            double m = times[j].Order().ElementAt(times[j].Count / 2);
            Console.WriteLine($"passes of {sizes[j],5} ({sizes[j] * per / 1048576.0,8:F1} MiB): {m,9:F1} ms, {m * 1000 / total,8:F1} µs a copy");
        }
        return 0;
    }
}
