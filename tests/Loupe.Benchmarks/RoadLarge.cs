using System.Diagnostics;
using Loupe.Abstractions.Toolkit;
using Loupe.Analysis.Evaluation;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--road-large [SIDE] [CALLS] [one | metric | inmetric | sweep | pair | chunks | first] [speckled]</c>: ROAD's noisy
/// imputation at ImageNet size (issue 22): 8 inputs of 3×SIDE×SIDE (default 224), five percentages (10…90), ranked by a
/// smooth random map (blobs, as saliency maps are), against the forward of the 40 imputed images through resnet18 (the
/// pass ROAD needs after the map). Medians of CALLS calls (default 5), alternated; with <c>metric</c>, also the whole
/// metric on resnet18 b8 and its floor. <c>inmetric</c>: the metric, its floor and the raw forwards call by call;
/// <c>sweep</c>: the 40 systems one after another on one thread; <c>pair</c>: 8 systems of each size on one thread and
/// on two; <c>chunks</c>: the forward of the 40 copies split into passes of several sizes; <c>first</c>: the first
/// calls of a fresh process. With <c>speckled</c>, the masks are ranked by white noise instead (speckled, as input
/// gradients are), in the modes that solve these masks (<c>metric</c> and <c>inmetric</c> run the metric itself, on
/// resnet18's saliency maps as the paired row does). With <c>fifty</c>, Quantus's default 50 percentages (1, 3, …, 99)
/// instead of five (<c>parts</c> then also times the imputation on one thread and the noise draw); with <c>nd</c>,
/// <c>one</c> times the dissection alone (the banded path takes seconds on the largest masks).</summary>
public static class RoadLarge
{
    delegate void SpanSolver(Span<double> image, ReadOnlySpan<bool> unknown, int c, int h, int w);

    /// <summary>Runs the comparison and prints one line per phase.</summary>
    public static int Run(string[] args)
    {
        Bench.Init();
        int side = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 224;
        int calls = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 5;
        manual_seed(3);
        long n = 8, d = side * side;
        var x = randn([n, 3, side, side]);
        var map = args.Contains("speckled") ? randn([n, side * side]) : nn.functional.interpolate(randn([n, 1, side / 16, side / 16]), size: [side, side], mode: InterpolationMode.Bilinear, align_corners: false).flatten(1);
        var rank = zeros_like(map, dtype: ScalarType.Int64).scatter_(1, map.argsort(1, descending: true), arange(d).expand(n, d).contiguous());
        // `fifty`: Quantus's default percentages (1, 3, …, 99) instead of five.
        int[] percentages = args.Contains("fifty") ? [.. Enumerable.Range(0, 50).Select(k => 1 + 2 * k)] : [10, 30, 50, 70, 90];
        long[] limits = [.. percentages.Select(p => (long)Math.Floor(d * p / 100.0 + 1e-9))];
        var noise = randn([n, LinearImputation.NoiseLength(limits, 3, d)]);
        var generators = Enumerable.Range(0, (int)n).Select(i => new TorchSharp.torch.Generator((ulong)i)).ToArray();
        using var model = Bench.Resnet18();
        var copies = x.repeat(limits.Length, 1, 1, 1);
        var unknown = (rank.unsqueeze(1) < tensor(limits).view(1, -1, 1)).view(-1, 1, side, side);
        var inputCopies = x.unsqueeze(1).expand(n, limits.Length, 3, side, side).reshape(-1, 3, side, side);
        var phases = new (string Name, Action Call)[]
        {
            ("imputation of 40, every system by the banded factorisation", () => { using var s = NewDisposeScope(); LinearImputation.Solve(inputCopies, unknown, ImputationSolver.Banded); }),
            ("noisy imputation of 40", () => { using var s = NewDisposeScope(); LinearImputation.Noisy(x, rank, limits, noise, 0.01); }),
            ("noisy imputation of 40, one thread", () => { using var s = NewDisposeScope(); set_num_threads(1); LinearImputation.Noisy(x, rank, limits, noise, 0.01); set_num_threads(2); }),
            ("resnet18 forward of 40", () => { using var s = NewDisposeScope(); using (no_grad()) model.Forward(copies); }),
            ("resnet18 forward of 32 + 8", () => { using var s = NewDisposeScope(); using (no_grad()) { model.Forward(copies.narrow(0, 0, 32)); model.Forward(copies.narrow(0, 32, 8)); } }),
            ("resnet18 forward of 24 + 16", () => { using var s = NewDisposeScope(); using (no_grad()) { model.Forward(copies.narrow(0, 0, 24)); model.Forward(copies.narrow(0, 24, 16)); } }),
            ("noise draw of 8 × 5 × 3×SIDE×SIDE, per-input generators", () => { using var s = NewDisposeScope(); stack(generators.Select(g => randn([limits.Length, 3, side, side], generator: g)).ToArray()); }),
        };
        if (args.Contains("metric"))
        {
            // The whole metric on resnet18 b8 (224×224 only) against its floor, as the paired row runs them.
            var bench = new LargeRoadBenchmarks();
            bench.Setup();
            phases = [.. phases, ("road, 5 percentages (resnet18 b8)", bench.Road), ("its floor (saliency of 8 + forward of 40)", () => bench.RoadPasses())];
        }
        // `at=J` or `at=J-K`: the modes that go point by point (perpoint, one) take those points only.
        var points = args.FirstOrDefault(a => a.StartsWith("at="))?[3..].Split('-').Select(int.Parse).ToArray();
        bool Selected(int j) => points is null || (j >= points[0] && j <= points[^1]);
        if (args.Contains("perpoint"))
        {
            // The noisy imputation of the 8 inputs at each point alone, on one thread: what each percentage costs.
            set_num_threads(1);
            for (int j = 0; j < limits.Length; j++)
            {
                if (!Selected(j)) continue;
                var one = new[] { limits[j] };
                var z = randn([n, LinearImputation.NoiseLength(one, 3, d)]);
                var best = double.MaxValue;
                for (int r = 0; r < calls; r++)
                {
                    var sw = Stopwatch.StartNew();
                    using (NewDisposeScope()) LinearImputation.Noisy(x, rank, one, z, 0.01);
                    best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
                }
                var mask0 = (rank[0] < limits[j]).data<bool>().ToArray();
                var (count0, band0) = LinearImputation.SystemShape(mask0, side, side);
                Console.WriteLine($"{percentages[j]}%: {best / n:F2} ms per system (input 0: {LinearImputation.DirectPath(mask0, side, side)}, n {count0}, b {band0})");
            }
            return 0;
        }
        if (args.Contains("sweep"))
        {
            // One thread, the 40 systems one after another (as a run meets them), solve alone, per round.
            var masks = unknown.reshape(n, limits.Length, d).cpu().contiguous();
            var images = Enumerable.Range(0, (int)n).Select(i => x[i].to(ScalarType.Float64).contiguous().data<double>().ToArray()).ToArray();
            var ms = Enumerable.Range(0, (int)n).Select(i => Enumerable.Range(0, limits.Length).Select(j => masks[i, j].data<bool>().ToArray()).ToArray()).ToArray();
            for (int r = 0; r < calls; r++)
            {
                double solve = 0, banded = 0;
                var all = Stopwatch.StartNew();
                for (int j = limits.Length - 1; j >= 0; j--)
                    for (int i = 0; i < n; i++)
                    {
                        var copy = (double[])images[i].Clone();
                        var sw = Stopwatch.StartNew();
                        if (j == 0) { BandedImputation.Solve(copy, ms[i][j], 3, side, side); banded += sw.Elapsed.TotalMilliseconds; }
                        else { DissectedImputation.Solve(copy, ms[i][j], 3, side, side); solve += sw.Elapsed.TotalMilliseconds; }
                    }
                Console.WriteLine($"round {r}: dissected {solve:F0} ms, banded {banded:F0} ms, all {all.Elapsed.TotalMilliseconds:F0} ms");
            }
            return 0;
        }
        if (args.Contains("first"))
        {
            // The first calls of a fresh process (a CLI run meets ROAD a few times): storage grown, code compiled.
            for (int r = 0; r < 4; r++)
            {
                var sw = Stopwatch.StartNew();
                using (var s4 = NewDisposeScope()) LinearImputation.Noisy(x, rank, limits, noise, 0.01);
                Console.WriteLine($"noisy imputation of 40, call {r}: {sw.Elapsed.TotalMilliseconds:F0} ms");
            }
            return 0;
        }
        if (args.Contains("chunks"))
        {
            // resnet18's forward of the 40 copies split into passes of several sizes, rotated, minimum and median.
            int[][] splits = [[40], [32, 8], [24, 16], [20, 20], [14, 13, 13], [10, 10, 10, 10], [8, 8, 8, 8, 8]];
            var t = splits.Select(_ => new List<double>()).ToArray();
            for (int r = 0; r <= calls; r++)
                for (int q = 0; q < splits.Length; q++)
                {
                    int at = 0;
                    var sw = Stopwatch.StartNew();
                    using (var s3 = NewDisposeScope()) using (no_grad())
                        foreach (var size in splits[q]) { model.Forward(copies.narrow(0, at, size)); at += size; }
                    if (r > 0) t[q].Add(sw.Elapsed.TotalMilliseconds);
                }
            for (int q = 0; q < splits.Length; q++)
                Console.WriteLine($"{string.Join("+", splits[q])}: min {t[q].Min():F0}, median {t[q].Order().ElementAt(t[q].Count / 2):F0} ms");
            return 0;
        }
        if (args.Contains("inmetric"))
        {
            var bench = new LargeRoadBenchmarks();
            bench.Setup();
            for (int r = 0; r <= calls; r++)
            {
                
                var sw = Stopwatch.StartNew(); bench.Road(); double road = sw.Elapsed.TotalMilliseconds;
                sw.Restart(); bench.RoadPasses(); double floor = sw.Elapsed.TotalMilliseconds;
                sw.Restart(); using (var s2 = NewDisposeScope()) using (no_grad()) { model.Forward(copies.narrow(0, 0, 32)); model.Forward(copies.narrow(0, 32, 8)); }
                double f328 = sw.Elapsed.TotalMilliseconds;
                Console.WriteLine($"road {road:F0} ms, floor {floor:F0} ms, ratio {road / floor:F2}, raw forward 32+8 {f328:F0}");
            }
            return 0;
        }
        if (args.Contains("parts"))
        {
            // The metric as the paired row runs it (saliency maps of resnet18, 8 inputs), and its parts: the saliency
            // pass, the forward of the 40 copies in the passes the metric makes (and in one pass, the paired floor's),
            // the imputation of the metric's own masks. Alternated, medians.
            var bench = new LargeRoadBenchmarks();
            bench.Setup();
            var ctx = new BenchContext(model, Bench.TopOne(1000), x);
            long per = Explain.EvenPasses(n * limits.Length, Explain.CopiesPerForward(ctx, x, null));
            var saliency = x.detach().requires_grad_(true);
            var g = CheckedOps.Grad([model.Forward(saliency).max(1).values.sum()], [saliency])[0].detach();
            var order = g.abs().sum(1).reshape(n, d).argsort(1, descending: true);
            var metricRank = zeros_like(order).scatter_(1, order, arange(d).expand(n, d).contiguous());
            var parts = new (string Name, Action Call)[]
            {
                ("road, 5 percentages (saliency + metric)", bench.Road),
                ("saliency pass of 8", () => { using var s = NewDisposeScope(); Bench.SaliencySum(model, x); }),
                ($"forward of {copies.shape[0]} in passes of {per}", () => { using var s = NewDisposeScope(); using (no_grad()) for (long at = 0; at < copies.shape[0]; at += per) model.Forward(copies.narrow(0, at, Math.Min(per, copies.shape[0] - at))); }),
                ($"noisy imputation of the metric's {copies.shape[0]}", () => { using var s = NewDisposeScope(); LinearImputation.Noisy(x, metricRank, limits, noise, 0.01); }),
                ($"noisy imputation of the metric's {copies.shape[0]}, one thread", () => { using var s = NewDisposeScope(); set_num_threads(1); LinearImputation.Noisy(x, metricRank, limits, noise, 0.01); set_num_threads(2); }),
                ("noise draw, per-input generators", () => { using var s = NewDisposeScope(); var z = empty_like(noise); TensorThreads.For((int)n, i => { using var row = z[i]; row.normal_(0, 1, generator: generators[i]); }); }),
            };
            if (percentages.Length != 5) parts = parts[1..];   // the paired row's metric runs five
            var spent = parts.Select(_ => new List<double>()).ToArray();
            for (int r = 0; r <= calls; r++)
                for (int j = 0; j < parts.Length; j++)
                {
                    int q = (j + r) % parts.Length;   // rotating order
                    var sw = Stopwatch.StartNew();
                    parts[q].Call();
                    if (r > 0) spent[q].Add(sw.Elapsed.TotalMilliseconds);
                }
            foreach (var (p, t) in parts.Zip(spent))
                Console.WriteLine($"{p.Name}: median {t.Order().ElementAt(t.Count / 2):F0} ms, min {t.Min():F0} ms");
            return 0;
        }
        if (args.Contains("pair"))
        {
            // Two-thread efficiency per mask size: 8 systems of one percentage (inputs 0..7) on one thread, then on two.
            var masks = unknown.reshape(n, limits.Length, d).cpu().contiguous();
            var images = Enumerable.Range(0, (int)n).Select(i => x[i].to(ScalarType.Float64).contiguous().data<double>().ToArray()).ToArray();
            for (int j = 1; j < limits.Length; j++)
            {
                var ms = Enumerable.Range(0, (int)n).Select(i => masks[i, j].data<bool>().ToArray()).ToArray();
                double Time(int threads)
                {
                    var best = double.MaxValue;
                    for (int r = 0; r < 4; r++)
                    {
                        var sw = Stopwatch.StartNew();
                        var ts = Enumerable.Range(0, threads).Select(t => new Thread(() =>
                        {
                            for (int i = t; i < n; i += threads) { var copy = (double[])images[i].Clone(); DissectedImputation.Solve(copy, ms[i], 3, side, side); }
                        })).ToArray();
                        foreach (var th in ts) th.Start();
                        foreach (var th in ts) th.Join();
                        if (r > 0) best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
                    }
                    return best;
                }
                double one = Time(1), two = Time(2);
                Console.WriteLine($"{limits[j]} unknown x8: one thread {one:F1} ms, two threads {two:F1} ms, efficiency {one / two / 2:P0}");
            }
            return 0;
        }
        if (args.Contains("one"))
        {
            // One system per percentage of input 0, on this thread: time against n·b²/2 multiply-adds.
            var masks = unknown.reshape(-1, d).cpu().contiguous();
            for (int j = 0; j < limits.Length; j++)
            {
                if (!Selected(j)) continue;
                var m = masks[j].data<bool>().ToArray();
                var (un, band) = LinearImputation.SystemShape(m, side, side);
                var image = x[0].to(ScalarType.Float64).contiguous().data<double>().ToArray();
                double Best(SpanSolver solve)   // best of 3 on fresh copies
                {
                    var best = double.MaxValue;
                    for (int k = 0; k < 3; k++)
                    {
                        var copy = (double[])image.Clone();
                        var sw = Stopwatch.StartNew();
                        solve(copy, m, 3, side, side);
                        best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
                    }
                    return best;
                }
                double best = args.Contains("nd") ? double.NaN : Best(BandedImputation.Solve);   // `nd`: the dissection alone
                Best(DissectedImputation.Solve);   // the first call grows the thread's storage to this mask's size
                double dissected = Best(DissectedImputation.Solve);
                Console.WriteLine($"{limits[j]} unknown: n {un}, band {band}: {best:F1} ms, {un * (double)band * band / 2 / best / 1e6:F2} G multiply-adds/s (n·b²/2); nested dissection {dissected:F1} ms");
            }
            return 0;
        }
        var times = phases.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i <= calls; i++)
            for (int j = 0; j < phases.Length; j++)
            {
                var sw = Stopwatch.StartNew();
                phases[j].Call();
                if (i > 0) times[j].Add(sw.Elapsed.TotalMilliseconds);
            }
        Console.WriteLine($"collections during the run: gen0 {GC.CollectionCount(0)}, gen1 {GC.CollectionCount(1)}, gen2 {GC.CollectionCount(2)}; GC pause {GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms");
        foreach (var (p, t) in phases.Zip(times))
            Console.WriteLine($"{p.Name} ({side}×{side}): {t.Order().ElementAt(t.Count / 2):F0} ms median of {calls}");
        return 0;
    }
}
