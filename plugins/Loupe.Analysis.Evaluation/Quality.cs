using System.Text.Json.Nodes;
using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Evaluation;

/// <summary>One batch as a metric sees it: the input, the linked step's maps (reused, not recomputed) and what they
/// explain, one random generator per input id, and helpers for perturbed forwards under the memory budget.</summary>
public sealed partial class MetricBatch(IAnalysisContext ctx, InputBatch batch, Tensor map, TargetSelection selection, Generator[] generators, int? microBatch)
{
    /// <summary>Consecutive maps normalised together (<see cref="Normalisations.Rows(Tensor, Normalisation, long)"/>):
    /// 1, or the batch's size under <c>normalise_over: batch</c>.</summary>
    public long NormaliseGroup { get; init; } = 1;

    /// <summary>The step's context.</summary>
    public IAnalysisContext Context => ctx;
    /// <summary>The batch.</summary>
    public InputBatch Batch => batch;
    /// <summary>The linked step's maps as it produced them (N×C×H×W or N×H×W).</summary>
    public Tensor Map => map;
    /// <summary>What each row explains.</summary>
    public TargetSelection Selection => selection;
    /// <summary>One generator per input, seeded from the step seed and the input id (shards give the same numbers).</summary>
    public Generator[] Generators => generators;
    /// <summary>Normalised input N×C×H×W.</summary>
    public Tensor X => batch.Input;
    /// <summary>Rows.</summary>
    public long N => batch.Input.shape[0];
    /// <summary>Features (pixels) per input.</summary>
    public long D => batch.Input.shape[2] * batch.Input.shape[3];
    /// <summary>Dataset row of the batch's first input (the data source's order; a shard's rows counted from its first).</summary>
    public long Start { get; init; }

    /// <summary>One value per pixel, N×D: a per-channel map summed over channels (Σ_c, signed, as Quantus sums
    /// explanations over channels), an N×H×W map as is; maps at another resolution are resized bilinearly.
    /// <paramref name="abs"/> takes |·| after the channel sum; <paramref name="normalise"/> rescales each row
    /// (<see cref="Normalisation.Default"/>: by max|·|).</summary>
    public Tensor Features(bool abs, Normalisation normalise)
    {
        using var scope = NewDisposeScope();
        long h = X.shape[2], w = X.shape[3];
        var m = map.dim() == 4 ? map.detach().sum(1) : map.detach();
        m = Maps.Reduce(m.to(ScalarType.Float32), h, w).reshape(N, h * w).to(ScalarType.Float64);
        m = Normalisations.Rows(m, normalise.Resolve(), NormaliseGroup);   // before |·|, as Quantus (it matters for normalise_by_negative)
        if (abs) m = m.abs();
        return scope.MoveToOuter(m);
    }

    /// <summary>One value per channel value, N×(C·H·W) in channel-major order (Quantus 0.6's features on several
    /// channels): a per-channel map as it is, an N×H×W map copied to every channel; resized bilinearly when its
    /// resolution differs; <paramref name="normalise"/> over all of a row's values, then <paramref name="abs"/>.</summary>
    public Tensor ValueFeatures(bool abs, Normalisation normalise)
    {
        using var scope = NewDisposeScope();
        long c = X.shape[1], h = X.shape[2], w = X.shape[3];
        var m = map.detach().to(ScalarType.Float32);
        if (m.dim() == 3) m = m.unsqueeze(1);
        if (m.dim() != 4 || m.shape[1] != 1 && m.shape[1] != c)
            throw new LoupeException($"features: values: the linked step's maps have shape ({string.Join("×", map.shape)}); expected N×H×W or N×{c}×H×W");
        if (m.shape[2] != h || m.shape[3] != w)
            m = nn.functional.interpolate(m, [h, w], mode: InterpolationMode.Bilinear, align_corners: false);
        var v = m.expand(N, c, h, w).reshape(N, c * h * w).to(ScalarType.Float64);
        v = Normalisations.Rows(v, normalise.Resolve(), NormaliseGroup);
        if (abs) v = v.abs();
        return scope.MoveToOuter(v.contiguous());
    }

    /// <summary>Every value of the map as the step gave it, N×(its values per input), at its own resolution: what the
    /// metrics of the map alone read with <c>features: values</c>; <paramref name="normalise"/> over a row, then
    /// <paramref name="abs"/>.</summary>
    public Tensor MapValues(bool abs, Normalisation normalise)
    {
        using var scope = NewDisposeScope();
        var v = Normalisations.Rows(map.detach().reshape(N, -1).to(ScalarType.Float64), normalise.Resolve(), NormaliseGroup);
        return scope.MoveToOuter(abs ? v.abs() : v.contiguous());
    }

    /// <summary>A per-feature tensor (N×[k×]D for pixels, N×[k×](C·D) for channel values) laid out as
    /// N×k×(1 or C)×H×W.</summary>
    Tensor AsImage(Tensor perFeature)
    {
        long c = X.shape[1], h = X.shape[2], w = X.shape[3];
        return perFeature.view(N, -1, perFeature.shape[^1] == c * h * w && c > 1 ? c : 1, h, w);
    }

    /// <summary>Object masks N×D (bool) from <see cref="ObjectMasks.For"/>: a masks folder, a boxes file, the data
    /// source's masks, else display pixels above <paramref name="threshold"/>.</summary>
    public Tensor Mask(double threshold, string? masks = null, string? boxes = null)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(ObjectMasks.For(batch, masks, boxes, threshold).reshape(N, D).contiguous());
    }

    /// <summary>The replacement values N×C×H×W: <paramref name="constant"/> (one value or one per channel, in the
    /// model's input space, as Quantus's numeric <c>perturb_baseline</c>) when given, else <paramref name="fill"/>; the
    /// uniform fills draw U[<paramref name="low"/>, <paramref name="high"/>) (Quantus uniform_low, uniform_high), and
    /// <see cref="Fill.UniformStep"/> one value per input here (one perturbation: see <see cref="PerStep"/>).</summary>
    public Tensor Baseline(Fill fill, float[]? constant = null, double low = 0, double high = 1, NoiseFill? noise = null)
    {
        if (constant is not null) return ImageOps.ConstantBaseline(X, constant, "baseline");
        using var scope = NewDisposeScope();
        var x = X;
        Tensor Uniform(long[] shape) => stack(generators.Select(g => rand(shape, generator: g)).ToArray()) * (float)(high - low) + (float)low;
        var b = fill switch
        {
            Fill.Min => x.amin([1, 2, 3], keepdim: true).expand_as(x),
            Fill.Mean or Fill.RunningMean => x.mean([1, 2, 3], keepdim: true).expand_as(x),
            Fill.Max => x.amax([1, 2, 3], keepdim: true).expand_as(x),
            Fill.Zero => zeros_like(x),
            Fill.Black => ctx.Input.Normalize(zeros_like(x)),
            Fill.UniformInput => Uniform([x.shape[1], x.shape[2], x.shape[3]]),
            Fill.UniformStep => Uniform([1, 1, 1]).expand_as(x),
            Fill.GaussianNoise or Fill.UniformNoise => x + stack(generators.Select(g => (noise ?? new()).Draw(fill, [x.shape[1], x.shape[2], x.shape[3]], g)).ToArray()).to(x.dtype),
            _ => ctx.Input.Normalize(Uniform([x.shape[1], x.shape[2], x.shape[3]])),
        };
        return scope.MoveToOuter(b.to(x.dtype).contiguous());
    }

    /// <summary>Byte cap of one baseline image file.</summary>
    public const long MaxBaselineBytes = 256L << 20;

    /// <summary>The replacement values N×C×H×W from a folder of one <c>&lt;id&gt;.npy</c> per input (Quantus's array
    /// <c>perturb_baseline</c>): C×H×W, or H×W / 1×H×W for every channel, in the model's input space, at the model
    /// input's size. The id names the file inside the folder (never outside it); a missing, oversized, misshapen or
    /// non-finite file is an error naming it.</summary>
    public Tensor BaselineImages(string folder)
    {
        using var scope = NewDisposeScope();
        long c = X.shape[1], h = X.shape[2], w = X.shape[3];
        var images = batch.Ids.Select(id =>
        {
            var what = $"option 'baseline_images': input '{SafeFile.Printable(id)}'";
            var path = SafeFile.Inside(folder, id + ".npy", what);
            if (!File.Exists(path)) throw new LoupeException($"{what}: folder '{folder}' has no {SafeFile.Printable(id)}.npy");
            SafeFile.RequireRegular(path, $"option 'baseline_images': {path}");
            if (new FileInfo(path).Length > MaxBaselineBytes) throw new LoupeException($"option 'baseline_images': {path} is larger than {MaxBaselineBytes >> 20} MiB");
            var t = Npy.Read(path, ImageFiles.MaxPixels).ToTensor().to(ScalarType.Float32);
            var shape = string.Join("×", t.shape);
            if (t.dim() == 2) t = t.unsqueeze(0);
            if (t.dim() != 3 || t.shape[0] is var tc && tc != c && tc != 1 || t.shape[1] != h || t.shape[2] != w)
                throw new LoupeException($"option 'baseline_images': {path} has shape ({shape}); the model's input is {c}×{h}×{w} (give C×H×W, or H×W for every channel)");
            if (!t.isfinite().all().item<bool>()) throw new LoupeException($"option 'baseline_images': {path} holds NaN or infinite values");
            return t.expand(c, h, w);
        }).ToArray();
        return scope.MoveToOuter(stack(images).to(X.dtype).contiguous());
    }

    /// <summary>The replacement values of a metric that perturbs <paramref name="steps"/> groups of pixels one call
    /// each (<paramref name="step"/>: each pixel's group, N×D, values ≥ steps in none): <paramref name="baseline"/>, but
    /// for <see cref="Fill.UniformStep"/> every group's pixels get their own U[low, high) value (per input, drawn in
    /// group order), as Quantus's batched replacement draws one value per call.</summary>
    public Tensor PerStep(Fill? fill, Tensor baseline, Tensor step, long steps, double low = 0, double high = 1)
    {
        if (fill != Fill.UniformStep) return baseline;
        using var scope = NewDisposeScope();
        var u = Scalars(steps, low, high);                                                       // N×steps
        var value = u.gather(1, step.clamp(0, Math.Max(steps - 1, 0)));                         // N×D or N×(C·D)
        return scope.MoveToOuter(AsImage(value).squeeze(1).expand_as(X).to(X.dtype).contiguous());
    }

    /// <summary>The replacement values of a metric that perturbs <paramref name="steps"/> groups of pixels cumulatively
    /// (<paramref name="step"/>: each pixel's group, N×D; values ≥ steps in none) with Quantus's <c>"mean"</c>
    /// (<see cref="Fill.RunningMean"/>): group j's pixels take μ_j, the mean of every value of the array after groups
    /// 0..j−1 were replaced, μ_0 the image's mean. A pixel keeps the value it was given, so one image holds every
    /// copy's replacements. <paramref name="patch"/> &gt; 0: the array is the image edge-padded to multiples of the
    /// patch (the smaller half first), as Quantus's region metrics perturb it; a padded cell belongs to its block.
    /// <paramref name="groups"/>: each row's group (<see cref="QuantusGroups"/>); μ_j is then the mean of the whole
    /// group's array, as Quantus's IROF takes the mean of its batch.</summary>
    public Tensor RunningMean(Tensor step, long steps, long patch = 0, long[]? groups = null)
    {
        using var scope = NewDisposeScope();
        var x = X.to(ScalarType.Float64);
        long c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var s = AsImage(step).squeeze(1).to(ScalarType.Float64);
        if (patch > 0)
        {
            long ph = (patch - h % patch) % patch, pw = (patch - w % patch) % patch;
            long[] pad = [pw / 2, pw - pw / 2, ph / 2, ph - ph / 2];   // left, right, top, bottom
            x = nn.functional.pad(x, pad, TorchSharp.PaddingModes.Replicate);
            s = nn.functional.pad(s, pad, TorchSharp.PaddingModes.Replicate);
        }
        long cells = x.shape[1] * x.shape[2] * x.shape[3];
        var group = s.expand(-1, c, -1, -1).reshape(N, -1).to(ScalarType.Int64);
        var inside = group < steps;
        var index = where(inside, group, zeros_like(group));
        var flat = x.reshape(N, -1);
        var sums = zeros(N, Math.Max(steps, 1), dtype: ScalarType.Float64).scatter_add_(1, index, where(inside, flat, zeros_like(flat))).cpu().ToArray<double>();
        var counts = zeros(N, Math.Max(steps, 1), dtype: ScalarType.Float64).scatter_add_(1, index, inside.to(ScalarType.Float64)).cpu().ToArray<double>();
        var total = flat.sum(1).cpu().ToArray<double>();
        groups ??= [.. Enumerable.Range(0, (int)N).Select(i => (long)i)];
        int g = (int)groups.Max() + 1;
        var sum = new double[g];
        var size = new double[g];
        for (long i = 0; i < N; i++) { sum[groups[i]] += total[i]; size[groups[i]] += cells; }
        var mu = new double[N * Math.Max(steps, 1)];
        for (long j = 0; j < steps; j++)
        {
            for (long i = 0; i < N; i++) mu[i * steps + j] = sum[groups[i]] / size[groups[i]];
            for (long i = 0; i < N; i++) sum[groups[i]] += counts[i * steps + j] * mu[i * steps + j] - sums[i * steps + j];
        }
        var value = tensor(mu, [N, Math.Max(steps, 1)]).gather(1, step.clamp(0, Math.Max(steps - 1, 0)));   // N×D or N×(C·D)
        return scope.MoveToOuter(AsImage(value).squeeze(1).expand_as(X).to(X.dtype).contiguous());
    }

    /// <summary>U[low, high) values N×<paramref name="count"/>, each input's from its own generator, in order.</summary>
    public Tensor Scalars(long count, double low, double high)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(stack(generators.Select(g => rand(Math.Max(count, 1), generator: g)).ToArray()).narrow(1, 0, count) * (float)(high - low) + (float)low);
    }

    /// <summary>Model output for the explained target on <paramref name="copies"/> perturbed versions of every input:
    /// <paramref name="make"/>(k0, k) returns N×k×C×H×W (copies k0..k0+k−1 of each row); as many copies per forward as
    /// the memory budget allows. <paramref name="softmax"/>: the class probability (class targets), else the target
    /// score (the logit). Returns N×copies (float64). Passes of even sizes (<see cref="Explain.EvenPasses"/>).</summary>
    public Tensor Outputs(long copies, Func<long, long, Tensor> make, bool softmax)
    {
        using var scope = NewDisposeScope();
        long n = N;
        long chunk = Explain.EvenPasses(copies, Explain.CopiesPerForward(ctx, X, microBatch) / n);
        var parts = new List<Tensor>();
        for (long k0 = 0; k0 < copies; k0 += chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long k = Math.Min(chunk, copies - k0);
            var batchCopies = make(k0, k).reshape(n * k, X.shape[1], X.shape[2], X.shape[3]);
            var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)k)).ToArray();
            using (SideInputs.ForRows(ctx.Model, rows))   // each copy with its row's side inputs (none on most models)
                parts.Add(inner.MoveToOuter(Output(batchCopies, selection.Rows(rows), softmax).view(n, k)));
        }
        return scope.MoveToOuter(cat(parts, 1).to(ScalarType.Float64));
    }

    /// <summary>Model output of the unperturbed inputs (N, float64).</summary>
    public Tensor Clean(bool softmax)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(Output(X, selection, softmax).to(ScalarType.Float64));
    }

    Tensor Output(Tensor input, TargetSelection sel, bool softmax) =>
        softmax ? Maps.Probability(ctx, input, sel) : Explain.Scores(ctx, input, sel, 0).Scores;

    /// <summary>x with the features where <paramref name="replace"/> (N×k×D, or N×k×(C·D) for channel values; 1 =
    /// replaced) taken from <paramref name="baseline"/> (N×C×H×W, or one per copy: N×k×C×H×W): N×k×C×H×W.</summary>
    public Tensor Replace(Tensor replace, Tensor baseline, Tensor? from = null)
    {
        var x = from ?? X;
        // One select instead of x·(1 − m) + baseline·m (four passes over the copies); the same values.
        var m = AsImage(replace.to(ScalarType.Bool));
        return where(m, baseline.dim() == 5 ? baseline : baseline.unsqueeze(1), x.unsqueeze(1));
    }

    /// <summary>x with the features where <paramref name="replace"/> (N×k×D) set to one value per copy
    /// (<paramref name="values"/>, N×k): N×k×C×H×W.</summary>
    public Tensor ReplaceWith(Tensor replace, Tensor values)
    {
        long k = values.shape[1];
        var m = AsImage(replace.to(ScalarType.Bool));
        return where(m, values.to(X.dtype).view(N, k, 1, 1, 1), X.unsqueeze(1));
    }
}

/// <summary>The points of a metric's curve: their x values and the axes' titles, for the plot; for curves with few
/// fixed points (ROAD's percentages), the name of each point's series (<c>&lt;key&gt;_&lt;point&gt;</c>, mean and std
/// in metrics.csv and <c>expect:</c>).</summary>
public sealed record CurveAxis(double[] X, string XTitle, string YTitle, string[]? Points = null);

/// <summary>Base of the Quantus-style metrics: one score per input from the linked step's maps, written as
/// <c>&lt;id&gt;_mean</c> / <c>&lt;id&gt;_std</c> (the id with '_' for '-'), <c>&lt;id&gt;.npy</c> and
/// <c>&lt;id&gt;.json</c> (per input, with the direction); shards merge exactly.</summary>
public abstract class QualityMetric<TOptions> : MetricAnalysis<TOptions>, IShardable where TOptions : MetricOptions, new()
{
    /// <summary>The component id (e.g. <c>sparseness</c>).</summary>
    public abstract string Id { get; }
    /// <summary>Direction of the score.</summary>
    public abstract bool HigherIsBetter { get; }
    /// <summary>Series name: the id with underscores.</summary>
    protected string Key => Id.Replace('-', '_');

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = HoldsSideInputs };
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => [Key + "_mean", Key + "_std"];

    /// <summary>Whether the metric runs on models with side inputs (Captum's tuple inputs): it forwards nothing but the
    /// batch and <see cref="MetricBatch.Outputs"/>'s copies, which hold each row's side inputs (or holds them itself).
    /// </summary>
    protected virtual bool HoldsSideInputs => false;

    /// <summary>Direction with these options (e.g. LeRF reverses region perturbation).</summary>
    protected virtual bool HigherIsBetterWith(TOptions options) => HigherIsBetter;

    /// <summary>Copies per forward for the perturbed inputs (null: the memory budget decides).</summary>
    protected virtual int? MicroBatch(TOptions options) => null;

    /// <summary>One score per row of the batch (curve metrics also record the curves: <see cref="MetricBatch.RecordCurves"/>).</summary>
    protected abstract double[] Score(TOptions options, MetricBatch batch);

    /// <summary>Scores the run from the rows its batches recorded with <see cref="MetricBatch.RecordAcross"/> (in
    /// dataset order) instead of one value per input; such options must refuse shards (<see cref="Unshardable"/>).</summary>
    protected virtual void ScoreAcross(TOptions o, IAnalysisContext ctx, MetricWriter writer, IReadOnlyList<string> ids, IReadOnlyList<string> labels, IReadOnlyList<double[]> rows) =>
        throw new InvalidOperationException($"{Id} recorded rows across inputs but does not score them");

    /// <summary>Why these options cannot run on shards (null: they can).</summary>
    protected virtual string? Unshardable(TOptions o) => null;

    string? IShardable.Unshardable(object options) => Unshardable((TOptions)options);

    /// <summary>Names of the curve's points when each gets a series (<c>&lt;key&gt;_&lt;name&gt;</c>); null: none.</summary>
    protected virtual IReadOnlyList<string>? CurvePoints(TOptions options) => null;

    /// <inheritdoc/>
    protected override IReadOnlyList<string> MetricNamesWith(TOptions options, IModel model) =>
        CurvePoints(options) is { } points ? [.. MetricNames, .. points.SelectMany(p => new[] { $"{Key}_{p}_mean", $"{Key}_{p}_std" })] : MetricNames;

    /// <inheritdoc/>
    protected override void Evaluate(TOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var ids = new List<string>();
        var labels = new List<string>();
        var values = new List<double>();
        var curves = new List<double[]>();
        var across = new List<double[]>();
        CurveAxis? axis = null;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            var result = LinkedMaps(o, ctx, batch);
            var gens = InputSeeds.Generators(ctx.Seed, batch.Ids)!;
            var mb = new MetricBatch(ctx, batch, result.Map, result.Selection, gens, MicroBatch(o))
            {
                Start = (ctx.Shard?.FirstRow ?? 0) + ids.Count,
                NormaliseGroup = o is NormalisedMetricOptions scoped ? scoped.Together(batch.Ids.Length) : 1,
            };
            try { values.AddRange(Score(o, mb)); }
            finally { foreach (var g in gens) g.Dispose(); }
            if (mb.Curves is { } c) { curves.AddRange(c.Rows); axis ??= c.Axis; }
            if (mb.Across is { } r) across.AddRange(r);
            ids.AddRange(batch.Ids);
            labels.AddRange(result.Selection.Labels);
            if (ctx.InputCount is > 0) ctx.Progress(ids.Count / (double)ctx.InputCount.Value);
        }
        if (across.Count > 0) { ScoreAcross(o, ctx, writer, ids, labels, across); return; }
        WriteScores(ctx, writer, Id, o, HigherIsBetterWith(o), ids, labels, values);
        if (axis is null) return;
        if (axis.Points is { } points)
            for (int j = 0; j < points.Length; j++) writer.Stat($"{Key}_{points[j]}", curves.Select(r => r[j]).ToList());
        var rows = new NdArray(curves.SelectMany(r => r.Select(v => (float)v)).ToArray(), [curves.Count, axis.X.Length]);
        ctx.Output.Raw(Key + "_curve", null, rows);
        CurveArtifacts.Write(ctx.Output, Id, o.Of!.Id, axis, rows);
    }

    /// <summary>Writes per-input scores as every Quantus-style metric does: <c>&lt;key&gt;.npy</c>, <c>&lt;key&gt;.json</c>
    /// (per input, with the direction) and the <c>&lt;key&gt;_mean</c> / <c>_std</c> statistic.</summary>
    public static void WriteScores(IAnalysisContext ctx, MetricWriter writer, string id, TOptions o, bool higherIsBetter,
        IReadOnlyList<string> ids, IReadOnlyList<string> labels, IReadOnlyList<double> values)
    {
        var key = id.Replace('-', '_');
        ctx.Output.Raw(key, null, new NdArray(values.Select(v => (float)v).ToArray(), [values.Count]));
        ctx.Output.Json(key, new
        {
            metric = id, of = o.Of!.Id, higher_is_better = higherIsBetter, options = o,
            inputs = ids.Select((x, i) => new { id = x, target = labels[i], value = values[i] }).ToArray(),
        });
        writer.Stat(key, values, higherIsBetter);
    }

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge)
    {
        merge.Rows(Key);
        merge.Concat(Key, "inputs");
        // A curve this base class wrote has its JSON beside the rows (mprt writes its own mprt_curve rows and merges them).
        if (!merge.Has(Key + "_curve", "npy") || !merge.Has(Key + "_curve", "json")) return;
        var rows = merge.Rows(Key + "_curve");
        var info = merge.Json(Key + "_curve")[0];
        var axis = new CurveAxis(info["x"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray(), info["x_title"]!.GetValue<string>(),
            info["y_title"]!.GetValue<string>(), info["points"]?.AsArray().Select(v => v!.GetValue<string>()).ToArray());
        CurveArtifacts.Write(merge.Output, Id, info["of"]!.GetValue<string>(), axis, rows);
    }
}
