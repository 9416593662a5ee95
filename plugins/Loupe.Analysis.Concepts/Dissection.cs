using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>Options of <c>dissection</c>.</summary>
public sealed record DissectionOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("spatial layer (N×K×h×w) whose units are labelled, e.g. relu2")]
    public string Layer { get; init; } = "";
    /// <summary>Masks.</summary>
    [Required, FilePath(Directory = true), Description("folder with one subfolder per concept (its name is the concept), holding <input-id>.png masks of the data images (≥ 128 = concept; a missing file = no concept pixels)")]
    public string Masks { get; init; } = "";
    /// <summary>Top quantile.</summary>
    [Range(1e-6, 0.5), Description("top quantile q of each unit's activations over the dataset: the unit's mask is where its upsampled map ≥ the ⌈q·N·h·w⌉-th largest value (Bau et al.: 0.005)")]
    public double Quantile { get; init; } = 0.005;
    /// <summary>IoU to label a unit.</summary>
    [Range(0.0, 1.0), Description("a unit is labelled with its best concept when their IoU reaches this (Bau et al.: 0.04)")]
    public double IouThreshold { get; init; } = 0.04;
    /// <summary>Units shown.</summary>
    [Range(0, 256), Description("units shown in units.png (highest IoU first)")]
    public int Show { get; init; } = 8;
}

/// <summary>Network Dissection (Bau et al. 2017). Pass 1 keeps, per unit, its ⌈q·N·h·w⌉ largest activations over the
/// dataset (bounded heaps: memory q·N·h·w per unit, exact); their minimum is the unit's threshold T_k. Pass 2 upsamples
/// each map bilinearly (align_corners = false) to the input size, thresholds it (≥ T_k) and accumulates, per unit and
/// concept, the intersection and union with the user's masks over the whole dataset; IoU = Σ|M∩L| / Σ|M∪L|. Both
/// passes go through the host's shared layer passes, and pass 1 is planned (<see cref="IPlansLayerPasses"/>): it rides
/// along with whichever step's dataset pass runs first. Outputs <c>iou.npy</c> (K×C), <c>thresholds.npy</c>,
/// <c>units.json</c> (label and IoU per unit), <c>summary.png</c> (units per concept) and <c>units.png</c>.</summary>
public sealed class Dissection : Analysis<DissectionOptions>, IPlansLayerPasses, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => [];

    /// <summary><c>units_&lt;concept&gt;</c> (units labelled with it) and <c>best_iou_&lt;concept&gt;</c> per concept
    /// subfolder of <c>masks</c>, so that <c>expect:</c> lines are checked at validation.</summary>
    public IReadOnlyList<string>? MetricNamesFor(object options, IModel model) =>
        options is DissectionOptions { Masks: var masks } && Directory.Exists(masks)
            ? [.. Directory.EnumerateDirectories(masks).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).SelectMany(c => new[] { $"units_{c}", $"best_iou_{c}" })]
            : null;

    static LayerPass TopPass(DissectionOptions o) =>
        new(o.Layer, FormattableString.Invariant($"loupe.dissection.top:{o.Layer}:{o.Quantile:R}"), () => new TopValues(o.Quantile));

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [TopPass((DissectionOptions)options)];

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(DissectionOptions options, AnalysisValidationContext context)
    {
        if (Directory.Exists(options.Masks) && !Directory.EnumerateDirectories(options.Masks).Any())
            yield return $"option 'masks': {options.Masks} has no concept subfolders";
    }

    /// <inheritdoc/>
    public override void Run(DissectionOptions options, IAnalysisContext ctx)
    {
        var conceptDirs = ConceptImages.Subfolders(options.Masks, "dissection: option 'masks'");
        var names = conceptDirs.Select(d => Path.GetFileName(d)!).ToArray();
        var (_, k, _, _) = Shape(ctx, options.Layer);
        var top = (TopValues)ctx.RunLayerPass(TopPass(options));
        var thresholds = top.Thresholds();
        int m = top.M;
        var thrKey = string.Join(",", thresholds.Select(t => BitConverter.SingleToInt32Bits(t)));
        var ious = (IouConsumer)ctx.RunLayerPass(new LayerPass(options.Layer, $"loupe.dissection.iou:{options.Layer}:{options.Masks}:{thrKey.GetHashCode()}",
            () => new IouConsumer(thresholds, conceptDirs, ctx.Input)));
        var iou = ious.Iou();
        int nc = names.Length;
        ctx.Output.Raw("thresholds", null, new NdArray(thresholds, [thresholds.Length]));
        ctx.Output.Raw("iou", null, new NdArray(iou.Select(v => (float)v).ToArray(), [k, nc]));
        var units = new List<(int Unit, int Concept, double Iou, bool Labelled)>();
        for (int u = 0; u < k; u++)
        {
            int best = 0;
            for (int c = 1; c < nc; c++) if (iou[u * nc + c] > iou[u * nc + best]) best = c;
            units.Add((u, best, iou[u * nc + best], iou[u * nc + best] >= options.IouThreshold));
        }
        var perConcept = names.Select((_, c) => units.Count(x => x.Labelled && x.Concept == c)).ToArray();
        for (int c = 0; c < nc; c++)
        {
            ctx.Output.Metric($"units_{names[c]}", perConcept[c]);
            ctx.Output.Metric($"best_iou_{names[c]}", Enumerable.Range(0, (int)k).Max(u => iou[u * nc + c]));
        }
        ctx.Output.Json("units", new
        {
            layer = options.Layer, quantile = options.Quantile, top_values_per_unit = m, iou_threshold = options.IouThreshold, concepts = names,
            units = units.Select(x => new { unit = x.Unit, label = x.Labelled ? names[x.Concept] : null, best_concept = names[x.Concept], iou = x.Iou, threshold = thresholds[x.Unit] }),
            summary = names.Select((c, i) => new { concept = c, units = perConcept[i] }),
        });
        ctx.Output.Figure("summary", null, () => ConceptPlots.Bars(names, perConcept.Select(v => (double)v).ToArray(), "units labelled",
            $"Network dissection of {options.Layer}: units per concept (IoU ≥ {Display.Number(options.IouThreshold)}, top {Display.Number(100 * options.Quantile)} % threshold)"));
        var shown = units.Where(x => x.Labelled).OrderByDescending(x => x.Iou).ThenBy(x => x.Unit).Take(options.Show).ToList();
        if (shown.Count > 0) ctx.Output.Display("units", null, UnitFigure(ctx, options, shown, names, conceptDirs, thresholds));
    }

    static (long N, long K, long H, long W) Shape(IAnalysisContext ctx, string layer)
    {
        long n = ctx.InputCount ?? throw new LoupeException("dissection: the data source does not know its size; the top-quantile threshold needs it (use a source with a known count)");
        using var scope = NewDisposeScope();
        using var capture = ctx.Model.Capture([layer], forGradients: false);
        using (no_grad()) ctx.Model.Forward(zeros([1, ctx.Input.Channels, ctx.Input.Height, ctx.Input.Width]));
        var a = capture[layer];
        if (a.dim() != 4) throw new LoupeException($"dissection: layer '{layer}' is not spatial (N×K×h×w)");
        return (n, a.shape[1], a.shape[2], a.shape[3]);
    }

    /// <summary>Per unit, the m = ⌈q·N·h·w⌉ largest activations seen (bounded min-heaps; N from
    /// <see cref="ILayerConsumer.Begin"/>, h·w from the first batch); the threshold is their minimum.</summary>
    sealed class TopValues(double q) : ILayerConsumer
    {
        PriorityQueue<float, float>[]? _heaps;
        long? _n;
        int m;

        public int M => m;

        public void Begin(long? inputCount) => _n = inputCount
            ?? throw new LoupeException("dissection: the data source does not know its size; the top-quantile threshold needs it (use a source with a known count)");

        public void Consume(InputBatch batch, Tensor a)
        {
            using var scope = NewDisposeScope();
            if (a.dim() != 4) throw new LoupeException("dissection needs a spatial layer (N×K×h×w)");
            long k = a.shape[1];
            if (m == 0)
            {
                long total = (_n ?? throw new LoupeException("dissection: the pass did not say how many inputs it reads")) * a.shape[2] * a.shape[3];
                m = (int)Math.Min(int.MaxValue, Math.Max(1, (long)Math.Ceiling(q * total - 1e-9)));
            }
            _heaps ??= Enumerable.Range(0, (int)k).Select(_ => new PriorityQueue<float, float>()).ToArray();
            var flat = a.to(ScalarType.Float32).transpose(0, 1).reshape(k, -1);
            int kk = (int)Math.Min(m, flat.shape[1]);
            var vals = flat.topk(kk, dim: 1).values.cpu().contiguous().ToArray<float>();
            for (int u = 0; u < k; u++)
            {
                var heap = _heaps[u];
                for (int t = 0; t < kk; t++)
                {
                    float v = vals[u * kk + t];
                    if (heap.Count < m) heap.Enqueue(v, v);
                    else if (v > heap.Peek()) heap.DequeueEnqueue(v, v);
                    else break;   // descending: nothing later in this row enters
                }
            }
        }

        public float[] Thresholds() => _heaps?.Select(hp => hp.Peek()).ToArray() ?? throw new LoupeException("the data source produced no inputs");
    }

    /// <summary>Σ|M∩L| and Σ|M|, Σ|L| per unit and concept over the dataset (K×C doubles).</summary>
    sealed class IouConsumer(float[] thresholds, List<string> conceptDirs, InputSpec spec) : ILayerConsumer
    {
        readonly double[] _inter = new double[thresholds.Length * conceptDirs.Count];
        readonly double[] _unit = new double[thresholds.Length];
        readonly double[] _concept = new double[conceptDirs.Count];

        public void Consume(InputBatch batch, Tensor a)
        {
            using var scope = NewDisposeScope();
            int n = batch.Ids.Length, nc = conceptDirs.Count, hw = spec.Height * spec.Width;
            var up = nn.functional.interpolate(a.to(ScalarType.Float32), [spec.Height, spec.Width], mode: InterpolationMode.Bilinear, align_corners: false);
            var units = up.ge(tensor(thresholds).view(1, -1, 1, 1)).to(ScalarType.Float64).reshape(n, thresholds.Length, hw).cpu();
            var masks = new float[n * nc * hw];
            for (int i = 0; i < n; i++)
                for (int c = 0; c < nc; c++)
                {
                    var file = Path.Combine(conceptDirs[c], batch.Ids[i] + ".png");
                    if (!File.Exists(file)) continue;
                    var mask = ConceptImages.Mask(file, spec);
                    for (int p = 0; p < hw; p++) if (mask[p]) masks[(i * nc + c) * hw + p] = 1;
                }
            var l = tensor(masks, [n, nc, hw]).to(ScalarType.Float64);
            var inter = units.MatMul(l.transpose(1, 2)).sum(dim: 0).contiguous().ToArray<double>();
            var su = units.sum([0, 2]).ToArray<double>();
            var sl = l.sum([0, 2]).ToArray<double>();
            for (int i = 0; i < inter.Length; i++) _inter[i] += inter[i];
            for (int i = 0; i < su.Length; i++) _unit[i] += su[i];
            for (int i = 0; i < sl.Length; i++) _concept[i] += sl[i];
        }

        public double[] Iou()
        {
            int nc = conceptDirs.Count;
            var iou = new double[_inter.Length];
            for (int u = 0; u < thresholds.Length; u++)
                for (int c = 0; c < nc; c++)
                {
                    double inter = _inter[u * nc + c], union = _unit[u] + _concept[c] - inter;
                    iou[u * nc + c] = union > 0 ? inter / union : 0;
                }
            return iou;
        }
    }

    /// <summary>One row per shown unit: its thresholded map over the first images that contain its concept.</summary>
    static RgbImage UnitFigure(IAnalysisContext ctx, DissectionOptions options, List<(int Unit, int Concept, double Iou, bool Labelled)> shown,
        string[] names, List<string> conceptDirs, float[] thresholds)
    {
        const int perRow = 5;
        var rows = shown.Select(_ => new List<RgbImage?>()).ToList();
        var captions = shown.Select(_ => new List<string?>()).ToList();
        foreach (var (batch, a) in Explain.LayerBatches(ctx, options.Layer))
        {
            using var scope = NewDisposeScope();
            var up = nn.functional.interpolate(a.to(ScalarType.Float32), [ctx.Input.Height, ctx.Input.Width], mode: InterpolationMode.Bilinear, align_corners: false);
            for (int s = 0; s < shown.Count; s++)
                for (int i = 0; i < batch.Ids.Length && rows[s].Count < perRow; i++)
                {
                    if (!File.Exists(Path.Combine(conceptDirs[shown[s].Concept], batch.Ids[i] + ".png"))) continue;
                    var map = up[i, shown[s].Unit].ge(thresholds[shown[s].Unit]).to(ScalarType.Float32);
                    var tile = Display.Overlay(batch.Pixels[i].cpu(), map.cpu(), 0.5, normalize: false);
                    rows[s].Add(Display.Scale(tile, Display.UpscaleFactor(tile.Width, 64)));
                    captions[s].Add(batch.Ids[i]);
                }
            if (rows.All(r => r.Count >= perRow)) break;
        }
        var labels = shown.Select(x => $"unit {x.Unit}: {names[x.Concept]} (IoU {x.Iou:0.00})").ToList();
        return Figure.Table(rows.Select(r => (IReadOnlyList<RgbImage?>)r).ToList(), null, labels,
            $"Network dissection of {options.Layer}: highest-IoU units, their top-{Display.Number(100 * options.Quantile)} % region (yellow) on images with the concept",
            captions.Select(c => (IReadOnlyList<string?>)c).ToList());
    }
}
