using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>focus</c>.</summary>
public sealed record FocusOptions : MetricOptions
{
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("mosaics per call of the method (default: the run's batch size)")]
    public int? MicroBatch { get; init; }
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the map, after normalise, before its positive part is kept (Quantus abs: false)")]
    public bool Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale each map first, over all its values: true (Quantus normalise_by_max; the default), false, or " + Normalisations.Functions + " — a scale leaves the share as it is but for the 1e-9 Quantus adds to its denominator (mosaics: quantus and quadrants), which decides the score of a map of tiny values; negative can change it under abs")]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Quadrants file: the inputs are mosaics already.</summary>
    [FilePath, Description("CSV file 'id,tl,tr,bl,br' (1 = the quadrant holds the explained class, 0 = not; a header line is allowed): the inputs are mosaics already (Quantus's x_batch and custom_batch), scored from the linked step's own maps with Quantus's formula, the positive part of every value over all of it (+1e-9); an input without a line is left out")]
    public string? Quadrants { get; init; }
    /// <summary>Which mosaics.</summary>
    [Description("how the mosaics are made: own (the default: one per input at the model's input size, partners drawn per input id) or quantus (Quantus's mosaic_creation on the data's labels: mosaics_per_class per class, Python's random seeded with mosaic_seed, four full images side by side, so twice the input's height and width — the model must take that size; the whole run at once)")]
    public MosaicSource Mosaics { get; init; }
    /// <summary>Quantus's mosaics_per_class.</summary>
    [Range(1, 100_000), Description("mosaics: quantus — mosaics per class (Quantus mosaics_per_class)")]
    public int? MosaicsPerClass { get; init; }
    /// <summary>Quantus's seed.</summary>
    [Range(1, long.MaxValue), Description("mosaics: quantus — the seed of Python's random (Quantus mosaic_creation's seed; Quantus leaves an unset or 0 seed to the system, which no run can repeat)")]
    public long? MosaicSeed { get; init; }
}

/// <summary>Where <c>focus</c>'s mosaics come from.</summary>
public enum MosaicSource
{
    /// <summary>Loupe's: one per input, at the input's size.</summary>
    Own,
    /// <summary>Quantus's mosaic_creation.</summary>
    Quantus,
}

/// <summary><c>focus</c> (Arias-Duart et al. 2022; Quantus Focus): for each input i explained for class c, a 2 × 2
/// mosaic is built from i, one other input the model predicts as c and two it predicts as another class (drawn from
/// the whole run, placed in random quadrants; seeded per input id), each image halved (2 × 2 average pooling, or
/// bilinear resizing for odd sizes) so that the mosaic has the model's input size. The method explains the mosaic for
/// c, and the score is the share of the positive relevance (channel-summed map) that lies in the two quadrants of
/// class c. Inputs without such partners score NaN (left out of the mean, with a warning). The partners come from
/// every input of the run, so the step does not run on shards. Higher is better.</summary>
public sealed class Focus : MetricAnalysis<FocusOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(FocusOptions options) => "mosaics of four inputs";

    /// <inheritdoc/>
    protected override string? ComparesPredictedClass(FocusOptions options) => "";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["focus_mean", "focus_std"];

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(FocusOptions o, AnalysisValidationContext context)
    {
        if (o.Mosaics == MosaicSource.Quantus)
        {
            if (o.MosaicsPerClass is null) yield return "mosaics: quantus needs 'mosaics_per_class' (Quantus's mosaics_per_class)";
            if (o.MosaicSeed is null) yield return "mosaics: quantus needs 'mosaic_seed' (Quantus's seed, at least 1: an unset seed draws differently each run)";
            if (o.Quadrants is not null) yield return "options 'quadrants' (the inputs are mosaics) and 'mosaics: quantus' (make them) exclude each other";
        }
        else if (o.MosaicsPerClass is not null || o.MosaicSeed is not null)
            yield return "options 'mosaics_per_class' and 'mosaic_seed' apply to mosaics: quantus";
    }

    /// <summary>Image (C×H×W) halved.</summary>
    static Tensor Half(Tensor x)
    {
        long h = x.shape[1], w = x.shape[2];
        return h % 2 == 0 && w % 2 == 0
            ? nn.functional.avg_pool2d(x.unsqueeze(0), 2)[0]
            : nn.functional.interpolate(x.unsqueeze(0), [h / 2, w / 2], mode: InterpolationMode.Bilinear, align_corners: false)[0];
    }

    /// <summary>The mosaic (C×H×W) of four images in quadrants top-left, top-right, bottom-left, bottom-right.</summary>
    public static Tensor Mosaic(Tensor[] four, long h, long w)
    {
        var q = four.Select(Half).ToArray();
        var top = cat([q[0], q[1]], 2);
        var bottom = cat([q[2], q[3]], 2);
        var m = cat([top, bottom], 1);
        return m.shape[1] == h && m.shape[2] == w ? m
            : nn.functional.interpolate(m.unsqueeze(0), [h, w], mode: InterpolationMode.Bilinear, align_corners: false)[0];
    }

    /// <inheritdoc/>
    protected override void Evaluate(FocusOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        if (o.Quadrants is { } file) { Given(o, file, ctx, writer); return; }
        if (o.Mosaics == MosaicSource.Quantus) { QuantusMosaicRun(o, ctx, writer); return; }
        using var scope = NewDisposeScope();
        var ids = new List<string>();
        var inputs = new List<Tensor>();
        var predicted = new List<long>();
        var explained = new List<long>();
        var labels = new List<string>();
        foreach (var batch in ctx.Batches())
        {
            using var inner = NewDisposeScope();
            var (_, logits, sel) = Explain.Scores(ctx, batch.Input, null, 0);
            var classes = sel.Classes ?? throw new LoupeException("focus: the target is not a class (a mosaic is explained for a class; use a class target such as top-1)");
            predicted.AddRange(Maps.TopClass(logits, "focus").ToArray<long>());
            explained.AddRange(classes);
            labels.AddRange(sel.Labels);
            ids.AddRange(batch.Ids);
            inputs.Add(inner.MoveToOuter(batch.Input.detach().clone()));
        }
        var x = cat(inputs, 0);
        long n = x.shape[0], h = x.shape[2], w = x.shape[3];
        var values = Enumerable.Repeat(double.NaN, (int)n).ToArray();
        var gens = InputSeeds.Generators(ctx.Seed, ids.ToArray())!;
        var plans = new List<(int Row, Tensor Mosaic, bool[] Target)>();
        for (int i = 0; i < n; i++)
        {
            var same = Enumerable.Range(0, (int)n).Where(j => j != i && predicted[j] == explained[i]).ToArray();
            var other = Enumerable.Range(0, (int)n).Where(j => predicted[j] != explained[i]).ToArray();
            if (same.Length == 0 || other.Length < 2) continue;
            var g = gens[i];
            int partner = same[randint(0, same.Length, [1], generator: g).item<long>()];
            var pick = randperm(other.Length, generator: g).ToArray<long>();
            var order = randperm(4, generator: g).ToArray<long>();               // quadrant of image k (i, partner, other, other)
            var images = new[] { i, partner, other[pick[0]], other[pick[1]] };
            var placed = new Tensor[4];
            var target = new bool[4];
            for (int k = 0; k < 4; k++) { placed[order[k]] = x[images[k]]; target[order[k]] = k < 2; }
            plans.Add((i, Mosaic(placed, h, w), target));
        }
        foreach (var gen in gens) gen.Dispose();
        int chunk = Math.Max(1, o.MicroBatch ?? ctx.BatchSize);
        var figure = new FocusFigure(ctx);
        for (int s = 0; s < plans.Count; s += chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var part = plans.Skip(s).Take(chunk).ToList();
            var rows = part.Select(p => p.Row).ToArray();
            var selection = new TargetSelection(rows.Select(r => explained[r]).ToArray(), rows.Select(r => labels[r]).ToArray());
            var raw = LinkedMaps(o, ctx, stack(part.Select(p => p.Mosaic).ToArray()), null, selection).Map.detach();
            var map = Normalised(o, Maps.Reduce(raw.dim() == 4 ? raw.sum(1) : raw, h, w).to(ScalarType.Float64));   // channel sum, signed
            var pos = o.Abs ? map.abs() : map.clamp_min(0);
            for (int k = 0; k < part.Count; k++)
            {
                var quadrant = zeros(h, w, dtype: ScalarType.Float64);
                var boxes = Boxes(h, w);
                for (int q = 0; q < 4; q++)
                    if (part[k].Target[q]) quadrant[TensorIndex.Slice(boxes[q].Y0, boxes[q].Y1), TensorIndex.Slice(boxes[q].X0, boxes[q].X1)] = 1.0;
                double total = pos[k].sum().item<double>();
                values[part[k].Row] = total > 0 ? (pos[k] * quadrant).sum().item<double>() / total : double.NaN;
                figure.Add(part[k].Mosaic, pos[k], part[k].Target, ids[part[k].Row], labels[part[k].Row], values[part[k].Row]);
            }
        }
        figure.Write(o.Of!.Id);
        int skipped = values.Count(double.IsNaN);
        if (skipped > 0)
            ctx.Warn($"focus: {skipped} input(s) have no mosaic (no other input predicted as their class, fewer than two of other classes, or no positive relevance); left out of the mean");
        QualityMetric<FocusOptions>.WriteScores(ctx, writer, "focus", o, true, ids, labels, values);
    }

    /// <summary>Each map (first dimension) rescaled over all its values by <c>normalise</c> (Quantus's preprocessing,
    /// before abs and the positive part).</summary>
    static Tensor Normalised(FocusOptions o, Tensor maps) =>
        Normalisations.Rows(maps.reshape(maps.shape[0], -1), o.Normalise.Resolve()).reshape(maps.shape);

    /// <summary>The four quadrants' boxes (top-left, top-right, bottom-left, bottom-right) of an H×W image.</summary>
    static (long Y0, long Y1, long X0, long X1)[] Boxes(long h, long w) =>
        [(0, h / 2, 0, w / 2), (0, h / 2, w / 2, w), (h / 2, h, 0, w / 2), (h / 2, h, w / 2, w)];

    /// <summary>Quantus's Focus score of one map's positive part (C×H×W): Σ(mask · a⁺) / (Σ a⁺ + 1e-9), the mask 1 on
    /// the quadrants marked (top-left, top-right, bottom-left, bottom-right; halves at ⌊H/2⌋, ⌊W/2⌋).</summary>
    static double QuantusShare(Tensor positive, bool[] mark)
    {
        using var scope = NewDisposeScope();
        long h = positive.shape[^2], w = positive.shape[^1];
        var mask = zeros(h, w, dtype: ScalarType.Float64);
        var boxes = Boxes(h, w);
        for (int q = 0; q < 4; q++)
            if (mark[q]) mask[TensorIndex.Slice(boxes[q].Y0, boxes[q].Y1), TensorIndex.Slice(boxes[q].X0, boxes[q].X1)] = 1.0;
        return (positive * mask).sum().item<double>() / (positive.sum().item<double>() + 1e-9);
    }

    /// <summary>Quantus's mosaics (<see cref="QuantusMosaics"/>) of the run's inputs by their labels, four full inputs
    /// side by side (2H × 2W), each explained by the linked step's method for its class and scored as Quantus's
    /// Focus (<see cref="QuantusShare"/> over every value of the map). Writes <c>mosaics.json</c> (each mosaic's inputs,
    /// quadrants and class) beside the scores, one per mosaic.</summary>
    void QuantusMosaicRun(FocusOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        using var scope = NewDisposeScope();
        var ids = new List<string>();
        var truth = new List<long>();
        var inputs = new List<Tensor>();
        foreach (var batch in ctx.Batches())
        {
            using var inner = NewDisposeScope();
            if (batch.Labels is null)
                throw new LoupeException($"focus: mosaics: quantus builds the mosaics from the data's labels, and input '{batch.Ids[0]}' has none (give the data source its labels)");
            ids.AddRange(batch.Ids);
            truth.AddRange(batch.Labels);
            inputs.Add(inner.MoveToOuter(batch.Input.detach().clone()));
        }
        var x = cat(inputs, 0);
        long outputs;
        using (no_grad()) outputs = ctx.Model.Forward(x.narrow(0, 0, 1)).reshape(1, -1).shape[1];
        if (truth.FindIndex(c => c < 0 || c >= outputs) is var bad and >= 0)
            throw new LoupeException($"focus: input '{ids[bad]}' has label {truth[bad]}, outside the model's {outputs} outputs (the mosaics are explained for their labels)");
        var mosaics = QuantusMosaics.Create(truth, o.MosaicsPerClass!.Value, o.MosaicSeed!.Value);
        string Label(long c) => c < ctx.Labels.Count ? $"class {c} ({ctx.Labels[(int)c]})" : $"class {c}";
        var values = new double[mosaics.Count];
        var names = mosaics.Select((_, k) => $"mosaic{k:D5}").ToList();
        var figure = new FocusFigure(ctx);
        int chunk = Math.Max(1, o.MicroBatch ?? ctx.BatchSize);
        for (int s = 0; s < mosaics.Count; s += chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var part = mosaics.Skip(s).Take(chunk).ToList();
            var images = stack(part.Select(m => cat([cat([x[m.Rows[0]], x[m.Rows[1]]], 2), cat([x[m.Rows[2]], x[m.Rows[3]]], 2)], 1)).ToArray());
            var selection = new TargetSelection(part.Select(m => m.Class).ToArray(), part.Select(m => Label(m.Class)).ToArray());
            Tensor map;
            try { map = LinkedMaps(o, ctx, images, null, selection).Map.detach().to(ScalarType.Float64); }
            catch (LoupeException e) when (s == 0)
            {
                throw new LoupeException($"focus: Quantus's mosaics are four inputs side by side, {images.shape[2]}×{images.shape[3]}, and the model could not take them ({e.Message}); use mosaics: own (one input's size) for a model of fixed input size");
            }
            if (map.dim() == 3) map = map.unsqueeze(1);
            if (map.shape[2] != images.shape[2] || map.shape[3] != images.shape[3])
                map = nn.functional.interpolate(map, [images.shape[2], images.shape[3]], mode: InterpolationMode.Bilinear, align_corners: false);
            var pos = (o.Abs ? Normalised(o, map).abs() : Normalised(o, map)).clamp_min(0);
            for (int k = 0; k < part.Count; k++)
            {
                values[s + k] = QuantusShare(pos[k], part[k].Target);
                figure.Add(images[k], pos[k], part[k].Target, names[s + k], Label(part[k].Class), values[s + k]);
            }
        }
        figure.Write(o.Of!.Id);
        ctx.Output.Json("mosaics", new
        {
            note = "Quantus mosaic_creation: inputs in quadrants top-left, top-right, bottom-left, bottom-right; target marks the quadrants of the mosaic's class",
            mosaics = mosaics.Select((m, k) => new { id = names[k], @class = m.Class, inputs = m.Rows.Select(r => ids[r]).ToArray(), target = m.Target }).ToArray(),
        });
        QualityMetric<FocusOptions>.WriteScores(ctx, writer, "focus", o, true, names, [.. mosaics.Select(m => Label(m.Class))], values);
    }

    /// <summary>Inputs that are mosaics already (Quantus Focus with its custom_batch): each input with a line in the
    /// quadrants file scores Σ(mask · a⁺) / (Σ a⁺ + 1e-9) over every value of the linked step's map (per channel when
    /// it has channels, |·| first under <c>abs</c>), the mask 1 on the quadrants marked 1.</summary>
    void Given(FocusOptions o, string file, IAnalysisContext ctx, MetricWriter writer)
    {
        var marks = new Dictionary<string, bool[]>();
        foreach (var (line, id, v) in IdCsv.Integers(file, 4, "'id,tl,tr,bl,br' (0 or 1)"))
        {
            if (v.Any(q => q is not (0 or 1))) throw new LoupeException($"{file}:{line}: quadrant marks must be 0 or 1");
            marks[id] = [.. v.Select(q => q == 1)];
        }
        var ids = new List<string>();
        var labels = new List<string>();
        var values = new List<double>();
        var figure = new FocusFigure(ctx);
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var result = LinkedMaps(o, ctx, batch);
            var map = result.Map.detach().to(ScalarType.Float64);
            if (map.dim() == 3) map = map.unsqueeze(1);
            long h = batch.Input.shape[2], w = batch.Input.shape[3];
            if (map.shape[2] != h || map.shape[3] != w)
                map = nn.functional.interpolate(map, [h, w], mode: InterpolationMode.Bilinear, align_corners: false);
            var pos = (o.Abs ? Normalised(o, map).abs() : Normalised(o, map)).clamp_min(0);
            for (int i = 0; i < batch.Ids.Length; i++)
            {
                if (!marks.TryGetValue(batch.Ids[i], out var mark)) { values.Add(double.NaN); continue; }
                values.Add(QuantusShare(pos[i], mark));
                figure.Add(batch.Input[i], pos[i], mark, batch.Ids[i], result.Selection.Labels[i], values[^1]);
            }
            ids.AddRange(batch.Ids);
            labels.AddRange(result.Selection.Labels);
        }
        int missing = values.Count(double.IsNaN);
        if (missing > 0) ctx.Warn($"focus: {missing} input(s) have no line in {file}; left out of the mean");
        figure.Write(o.Of!.Id);
        QualityMetric<FocusOptions>.WriteScores(ctx, writer, "focus", o, true, ids, labels, [.. values]);
    }
}
