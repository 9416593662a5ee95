using System.Diagnostics;
using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--profile-road [CALLS] [THREADS] [imputation | lipschitz | saliency | noisy | road-only | floor-only | pair] [paced]</c>: in-process stopwatch shares of ROAD (issue 22) on the bench row's inputs
/// (the demo CNN, 8 images, 5 percentages): the whole metric (its figure left undrawn, as the row; then drawn, as a pipeline run draws it), its floor (a saliency pass of 8 + one forward of 40)
/// and the imputation alone on the 40 masks of the saliency ranking (MoRF), by the default path and by conjugate gradients, the median of CALLS calls each,
/// interleaved so the machine's drift hits all three alike. On a loaded machine pass THREADS = 1: two-thread BLAS and
/// convolutions stall when the other thread is descheduled, which inflates the floor far more than the imputation's
/// small single-threaded calls. With <c>lipschitz</c>, local Lipschitz's row, its floor and
/// the floor's two passes instead. With <c>imputation</c>, only the two imputation phases (their ratio is then to the
/// conjugate-gradient path); with <c>paced</c>, 50 ms of sleep before each call, as tools/bench/paired.sh spaces its
/// calls (libtorch's OpenMP workers have stopped spinning, the thread pool's threads are parked). <c>road-only</c>,
/// <c>floor-only</c> and <c>pair</c>: ROAD alone, its floor alone, or the two alternated (each phase's neighbours change
/// its time: back to back, unpaced, the floor ran 7.5–8 ms against 10.6–11.8 ms paced).</summary>
public static class RoadProfile
{
    /// <summary>Runs the profile and prints one line per phase (<c>noisy</c>: ROAD's fused imputation, its copies in
    /// vector lanes against one by one).</summary>
    public static int Run(string[] args)
    {
        int calls = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 15;
        var bench = new QualityMetricBenchmarks();
        bench.Setup();
        if (args.Length > 1) set_num_threads(int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture));
        var (xs, unknown) = bench.RoadMasks([10, 30, 50, 70, 90]);
        var phases = new (string Name, Action Call)[]
        {
            ("road, 5 percentages", bench.Road),
            ("road with its curve figure drawn (as a pipeline run draws it)", bench.RoadDrawn),
            ("its floor (saliency of 8 + forward of 40)", () => bench.RoadPasses()),
            ("saliency of 8", () => { using var s = NewDisposeScope(); bench.SaliencyPass(); }),
            ("forward of 40", () => { using var s = NewDisposeScope(); bench.Forward40(); }),
            ("imputation alone (40 masks, default: direct on 28×28)", () => { using var s = NewDisposeScope(); LinearImputation.Solve(xs, unknown); }),
            ("imputation by conjugate gradients (40 masks)", () => { using var s = NewDisposeScope(); LinearImputation.Solve(xs, unknown, ImputationSolver.ConjugateGradient); }),
        };
        if (args.Contains("lipschitz"))
            phases = [("local-lipschitz, 10 samples", bench.LocalLipschitz), ("its floor (saliency passes of 8 and of 80)", () => bench.LipschitzPasses()),
                ("saliency of 8", () => { using var s = NewDisposeScope(); bench.SaliencyPass(); }),
                ("saliency of 80", () => { using var s = NewDisposeScope(); bench.SaliencyPass80(); })];
        if (args.Contains("saliency"))
            phases = [("saliency of 8, raw (the floor's)", () => { using var s = NewDisposeScope(); bench.SaliencyPass(); }),
                ("saliency of 8 through the toolkit (Explain.InputGradient)", () => { using var s = NewDisposeScope(); bench.ToolkitSaliency(); }),
                ("saliency of 8 through the plugin (Saliency.Attribute)", () => { using var s = NewDisposeScope(); bench.PluginSaliency(); })];
        // With `noisy`: ROAD's fused noisy imputation of the 40 copies (LinearImputation.Noisy, ranks that give the same
        // masks), its copies of one point in vector lanes (the default on these images) against one by one (a factor
        // limit just below the lanes path's).
        var ranks = unknown.view(8, 5, 784).sum(1).neg().argsort(1).argsort(1);   // a permutation per input
        long[] lim = [78, 235, 392, 548, 705];
        var nz = randn(8, LinearImputation.NoiseLength(lim, 1, 784));
        var xin = xs.view(8, 5, 1, 28, 28).select(1, 0).contiguous();
        if (args.Contains("noisy"))
            phases = [("Noisy, lanes", () => { using var s = NewDisposeScope(); LinearImputation.Noisy(xin, ranks, lim, nz, 0.1); }),
                ("Noisy, one by one", () => { using var s = NewDisposeScope(); LinearImputation.Noisy(xin, ranks, lim, nz, 0.1, Loupe.Analysis.Evaluation.BandedImputation.Entries(784, 29) - 1); })];
        if (args.Contains("road-only")) phases = phases.Take(1).ToArray();
        if (args.Contains("floor-only")) phases = [phases[2]];
        if (args.Contains("pair")) phases = [phases[0], phases[2]];
        if (args.Contains("imputation")) phases = phases.Where(p => p.Name.StartsWith("imputation")).ToArray();
        bool paced = args.Contains("paced");
        var times = phases.Select(_ => new List<double>()).ToArray();
        foreach (var (_, call) in phases) call();   // warm-up
        for (int i = 0; i < calls; i++)
            for (int j = 0; j < phases.Length; j++)
            {
                if (paced) Thread.Sleep(50);
                var sw = Stopwatch.StartNew();
                phases[j].Call();
                times[j].Add(sw.Elapsed.TotalMilliseconds);
            }
        double Median(List<double> t) => t.Order().ElementAt(t.Count / 2);
        double floor = Median(times[args.Contains("lipschitz") ? 1 : args.Contains("saliency") ? 0 : Math.Min(2, times.Length - 1)]);
        for (int j = 0; j < phases.Length; j++)
            Console.WriteLine($"{phases[j].Name}: {Median(times[j]):F2} ms median of {calls} ({Median(times[j]) / floor:F2} × the floor)");
        bench.Cleanup();
        return 0;
    }
}
