using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Concepts;

/// <summary>Options of <c>concept-discovery</c>.</summary>
public sealed record ConceptDiscoveryOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("spatial layer with non-negative activations (after a ReLU), e.g. relu2")]
    public string Layer { get; init; } = "";
    /// <summary>Rank.</summary>
    [Range(1, 64), Description("number of concepts (NMF rank)")]
    public int Concepts { get; init; } = 6;
    /// <summary>Iterations.</summary>
    [Range(1, 100_000), Description("multiplicative-update iterations of the factorisation")]
    public int Iterations { get; init; } = 300;
    /// <summary>Rows.</summary>
    [Range(16, 10_000_000), Description("at most this many activation vectors (image positions) are factorised; more are subsampled uniformly (seeded reservoir)")]
    public int MaxRows { get; init; } = 20_000;
    /// <summary>Crops.</summary>
    [Range(1, 64), Description("most activating crops shown per concept")]
    public int Top { get; init; } = 8;
    /// <summary>Crop size.</summary>
    [Range(0, 4096), Description("side of a crop in input pixels (0: three layer cells, at least a third of the input)")]
    public int Crop { get; init; } = 0;
    /// <summary>Heat maps.</summary>
    [Range(0, 64), Description("inputs shown with one heat map per concept")]
    public int Heatmaps { get; init; } = 6;
    /// <summary>Classes.</summary>
    [Description("classes whose concept importances are reported (names or indices); default every class with inputs")]
    public string[]? Classes { get; init; }
    /// <summary>Importance method.</summary>
    [Description("concept importance: 'gradient' (gradient × concept) or 'sobol' (CRAFT's total Sobol indices of the concept coefficients under a Halton/Saltelli mask design, Jansen estimator; needs a backend with interventions)")]
    public ConceptImportance Importance { get; init; } = ConceptImportance.Gradient;
    /// <summary>Sobol designs.</summary>
    [Range(2, 4096), Description("importance 'sobol': quasi-Monte-Carlo points nd per input; the model runs nd·(concepts + 2) times per input (CRAFT: 32)")]
    public int Designs { get; init; } = 32;
}

/// <summary>How concept-discovery ranks concepts for a class.</summary>
public enum ConceptImportance
{
    /// <summary>Gradient × concept: mean over the class's inputs of Σ_positions U_j · (∂y/∂A · W_j).</summary>
    Gradient,
    /// <summary>Total Sobol indices of the concept coefficients (CRAFT), <see cref="ConceptSobol"/>.</summary>
    Sobol,
}

/// <summary>Concept discovery by non-negative factorisation of a layer's activations (deep feature factorisation,
/// Collins et al. 2018; CRAFT, Fel et al. 2023): every position of every input is a vector A ∈ ℝ^K₊; NMF writes it as
/// A ≈ Σ_j U_j·W_j with r concept vectors W_j (<see cref="Nmf"/>). A second pass with gradients computes each input's
/// coefficients U (W fixed), the importance of concept j for class k — gradient × concept, the mean over the class's
/// inputs of Σ_positions U_j · (∂y_k/∂A · W_j) — and keeps each concept's most activating crops (streaming top-k, one
/// crop per input, centred on the position). With <c>importance: sobol</c> the importance is instead the mean over the
/// class's inputs of the concepts' total Sobol indices (<see cref="ConceptSobol"/>, CRAFT).
/// Outputs <c>concepts.npy</c> (r×K), <c>importance.npy</c> (classes×r), <c>crops.json</c>, <c>concepts.png</c> (top
/// crops per concept, ranked for the first class), <c>heatmaps.png</c> and <c>importance.png</c>.</summary>
public sealed class ConceptDiscovery : Analysis<ConceptDiscoveryOptions>, IPlansLayerPasses, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["relative_error"];

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ConceptDiscoveryOptions options, AnalysisValidationContext context)
    {
        foreach (var e in OptionRules.OnlyWith(options, options.Importance == ConceptImportance.Sobol, "importance: sobol", nameof(options.Designs))) yield return e;
        if (options.Importance == ConceptImportance.Sobol && !context.Capabilities.HasFlag(ModelCapabilities.Interventions))
            yield return "option 'importance': 'sobol' replaces the layer's activation, which this model backend cannot do (use 'gradient')";
    }

    static string Method(ConceptDiscoveryOptions o) => o.Importance == ConceptImportance.Sobol ? "total Sobol index" : "gradient × concept";

    static LayerPass Pass(ConceptDiscoveryOptions o) => new(o.Layer, $"loupe.concepts.rows:{o.Layer}:{o.MaxRows}", () => new RowSample(o.MaxRows));

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [Pass((ConceptDiscoveryOptions)options)];

    /// <summary>A uniform sample (reservoir, fixed seed) of at most <c>max</c> activation vectors over the dataset.</summary>
    sealed class RowSample(int max) : ILayerConsumer
    {
        readonly List<float[]> _rows = [];
        readonly Random _rng = new(21);
        long _seen;

        public void Consume(InputBatch batch, Tensor a)
        {
            using var scope = NewDisposeScope();
            if (a.dim() != 4) throw new LoupeException("concept-discovery needs a spatial layer (N×K×h×w)");
            long k = a.shape[1];
            var rows = a.to(ScalarType.Float32).permute(0, 2, 3, 1).reshape(-1, k).cpu().contiguous().ToArray<float>();
            for (long r = 0; r < rows.Length / k; r++, _seen++)
            {
                long slot = _seen < max ? _seen : _rng.NextInt64(_seen + 1);
                if (slot >= max) continue;
                var row = rows.AsSpan((int)(r * k), (int)k).ToArray();
                if (_seen < max) _rows.Add(row); else _rows[(int)slot] = row;
            }
        }

        public Tensor Matrix() => _rows.Count == 0 ? throw new LoupeException("the data source produced no inputs")
            : tensor(_rows.SelectMany(r => r).ToArray(), [_rows.Count, _rows[0].Length]);
    }

    /// <inheritdoc/>
    public override void Run(ConceptDiscoveryOptions options, IAnalysisContext ctx)
    {
        var sample = (RowSample)ctx.RunLayerPass(Pass(options));
        using var scope = NewDisposeScope();
        var a = sample.Matrix();
        ctx.Progress(0.82, $"NMF of {a.shape[0]}×{a.shape[1]} activations, rank {options.Concepts}");
        var (u, w) = Nmf.Fit(a, options.Concepts, options.Iterations, ctx.Seed);
        double rel = Nmf.Error(a, u, w) / Math.Max(1e-30, a.to(ScalarType.Float64).norm().item<double>());
        ctx.Output.Metric("relative_error", rel);
        ctx.Output.Raw("concepts", null, NdArray.FromTensor(w));
        int r = options.Concepts;
        var classes = Tcav.ResolveClasses(options.Classes, ctx.Labels, "concept-discovery");
        var importance = new Dictionary<long, double[]>();
        var counts = new Dictionary<long, int>();
        var tops = Enumerable.Range(0, r).Select(_ => new List<(float Value, string Id, int Y0, int X0, int Size, RgbImage Tile)>()).ToList();
        var heatRows = Enumerable.Range(0, r).Select(_ => new List<RgbImage?>()).ToList();
        var heatCaptions = new List<string>();
        bool sobol = options.Importance == ConceptImportance.Sobol;
        var design = sobol ? ConceptSobol.Design(r, options.Designs) : null;
        foreach (var batch in ctx.Batches())
        {
            using var inner = NewDisposeScope();
            using var capture = ctx.Model.Capture([options.Layer], forGradients: !sobol);
            var output = ctx.Model.Forward(batch.Input);
            var act = capture[options.Layer];
            long n = act.shape[0], k = act.shape[1], h = act.shape[2], wd = act.shape[3];
            var coef = Nmf.Transform(act.detach().permute(0, 2, 3, 1).reshape(-1, k), w, 100).reshape(n, h * wd, r);   // n × hw × r
            var cls = batch.Labels ?? output.argmax(1).cpu().ToArray<long>();
            var wanted = cls.Distinct().Where(c => classes is null || classes.Contains(c)).OrderBy(c => c).ToList();
            foreach (var (c, idx) in wanted.Select((c, i) => (c, i)))
            {
                if (sobol)
                {
                    if (!importance.TryGetValue(c, out var acc)) { importance[c] = acc = new double[r]; counts[c] = 0; }
                    foreach (int i in Enumerable.Range(0, (int)n).Where(i => cls[i] == c))
                    {
                        ctx.Cancellation.ThrowIfCancellationRequested();
                        var st = ConceptSobol.Importance(ctx.Model, options.Layer, batch.Input.narrow(0, i, 1), coef[i], w, h, wd, c, design!, ctx.BatchSize);
                        for (int j = 0; j < r; j++) acc[j] += st[j];
                        counts[c]++;
                    }
                    continue;
                }
                var g = CheckedOps.Grad([output[.., c].sum()], [act], retainGraph: idx < wanted.Count - 1)[0];
                var gw = g.to(ScalarType.Float64).permute(0, 2, 3, 1).reshape(n, h * wd, k).MatMul(w.t());   // n × hw × r
                var per = (coef * gw).sum(1).cpu();                                                          // n × r
                var rows = Enumerable.Range(0, (int)n).Where(i => cls[i] == c).ToArray();
                if (!importance.TryGetValue(c, out var sum)) { importance[c] = sum = new double[r]; counts[c] = 0; }
                var vals = per.index_select(0, tensor(rows.Select(i => (long)i).ToArray())).sum(dim: 0).ToArray<double>();
                for (int j = 0; j < r; j++) sum[j] += vals[j];
                counts[c] += rows.Length;
            }
            KeepTopCrops(options, ctx, batch, coef, h, wd, tops);
            for (int i = 0; i < n && heatCaptions.Count < options.Heatmaps; i++)
            {
                heatCaptions.Add(batch.Ids[i]);
                var maps = coef[i].t().reshape(r, h, wd).to(ScalarType.Float32);
                var px = batch.Pixels[i].cpu();
                for (int j = 0; j < r; j++)
                {
                    var tile = Display.Overlay(px, maps[j] / Math.Max(1e-30, coef.narrow(2, j, 1).max().item<double>()), 0.55, normalize: false);
                    heatRows[j].Add(Display.Scale(tile, Display.UpscaleFactor(tile.Width, 64)));
                }
            }
        }
        Report(options, ctx, r, importance, counts, tops, heatRows, heatCaptions);
    }

    static void KeepTopCrops(ConceptDiscoveryOptions options, IAnalysisContext ctx, InputBatch batch, Tensor coef, long h, long wd,
        List<List<(float Value, string Id, int Y0, int X0, int Size, RgbImage Tile)>> tops)
    {
        int H = ctx.Input.Height, W = ctx.Input.Width;
        double sy = H / (double)h, sx = W / (double)wd;
        int size = options.Crop > 0 ? options.Crop : (int)Math.Round(Math.Max(3 * Math.Max(sy, sx), Math.Min(H, W) / 3.0));
        int n = (int)coef.shape[0], r = (int)coef.shape[2];
        for (int j = 0; j < r; j++)
        {
            // Each input's best position for the concept, then the inputs in descending order (one crop per input).
            var (best, where) = coef.select(2, j).to(ScalarType.Float32).max(1);
            var v = best.cpu().ToArray<float>();
            var pos = where.cpu().ToArray<long>();
            var list = tops[j];
            foreach (int img in Enumerable.Range(0, n).OrderByDescending(i => v[i]).ThenBy(i => i))
            {
                if (list.Count >= options.Top && v[img] <= list[^1].Value) break;
                int t = img;
                int cy = (int)((pos[img] / wd + 0.5) * sy), cx = (int)((pos[img] % wd + 0.5) * sx);
                int y0 = Math.Clamp(cy - size / 2, 0, Math.Max(0, H - size)), x0 = Math.Clamp(cx - size / 2, 0, Math.Max(0, W - size));
                using var crop = batch.Pixels[img].narrow(1, y0, Math.Min(size, H)).narrow(2, x0, Math.Min(size, W)).cpu();
                list.Add((v[t], batch.Ids[img], y0, x0, Math.Min(size, Math.Min(H, W)), ConceptPlots.Tile(crop, 64)));
                list.Sort((p, q) => q.Value.CompareTo(p.Value));
                if (list.Count > options.Top) list.RemoveAt(list.Count - 1);
            }
        }
    }

    static void Report(ConceptDiscoveryOptions options, IAnalysisContext ctx, int r, Dictionary<long, double[]> importance, Dictionary<long, int> counts,
        List<List<(float Value, string Id, int Y0, int X0, int Size, RgbImage Tile)>> tops, List<List<RgbImage?>> heatRows, List<string> heatCaptions)
    {
        var classes = importance.Keys.OrderBy(c => c).ToArray();
        string Name(long c) => c < ctx.Labels.Count ? ctx.Labels[(int)c] : $"class {c}";
        var imp = classes.Select(c => importance[c].Select(v => v / counts[c]).ToArray()).ToArray();
        ctx.Output.Raw("importance", null, new NdArray(imp.SelectMany(x => x.Select(v => (float)v)).ToArray(), [classes.Length, r]));
        ctx.Output.Json("crops", new
        {
            layer = options.Layer, importance_method = options.Importance == ConceptImportance.Sobol ? "sobol" : "gradient", box = "y0, x0, y1, x1 (input pixels, end-exclusive)", classes = classes.Select(Name),
            importance = imp,
            concepts = tops.Select((l, j) => new { concept = j, crops = l.Select(t => new { id = t.Id, value = t.Value, box = new[] { t.Y0, t.X0, t.Y0 + t.Size, t.X0 + t.Size } }) }),
        });
        // Concepts ranked by importance for the first class (or as found when no class has inputs).
        var order = classes.Length > 0 ? Enumerable.Range(0, r).OrderByDescending(j => imp[0][j]).ToArray() : Enumerable.Range(0, r).ToArray();
        string ImpText(int j) => string.Join(", ", classes.Select((c, ci) => $"{Name(c)} {Display.Number(imp[ci][j])}"));
        var labels = order.Select(j => $"concept {j}\nimportance: {ImpText(j)}").ToList();
        ctx.Output.Display("concepts", null, Figure.Table(order.Select(j => (IReadOnlyList<RgbImage?>)tops[j].Select(t => (RgbImage?)t.Tile).ToList()).ToList(), null, labels,
            $"NMF concepts of {options.Layer}: most activating crops{(classes.Length > 0 ? $", ranked by {Method(options)} importance for class {Name(classes[0])}" : "")}",
            order.Select(j => (IReadOnlyList<string?>)tops[j].Select(t => (string?)$"{t.Id} {Display.Number(t.Value)}").ToList()).ToList()));
        if (heatCaptions.Count > 0)
            ctx.Output.Display("heatmaps", null, Figure.Table(order.Select(j => (IReadOnlyList<RgbImage?>)heatRows[j]).ToList(), heatCaptions,
                order.Select(j => $"concept {j}").ToList(), $"Where each NMF concept of {options.Layer} is present (coefficient U, scaled per concept)", null,
                new ColourBar(Display.Viridis.ToArray(), "0", "max U", "concept coefficient")));
        if (classes.Length > 0)
            ctx.Output.Figure("importance", null, () => ConceptPlots.Bars(Enumerable.Range(0, r).Select(j => $"concept {j}").ToList(), imp[0],
                Method(options), $"Importance of the NMF concepts for class {Name(classes[0])} (mean over its {counts[classes[0]]} inputs)"));
    }
}
