using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>A norm of a flattened map (Quantus's norm_func).</summary>
public enum MapNorm
{
    /// <summary>Frobenius: the L2 norm of all values.</summary>
    Fro,
    /// <summary>L2 (the same as <see cref="Fro"/> on a flattened map).</summary>
    L2,
    /// <summary>The largest |value| (Quantus linf_norm, distance_chebyshev).</summary>
    Linf,
    /// <summary>The sum of |values| (Quantus distance_manhattan).</summary>
    L1,
}

/// <summary>Options of the robustness metrics (each re-runs the evaluated method on perturbed inputs).</summary>
public sealed record StabilityOptions : NormalisedMetricOptions
{
    /// <summary>Samples.</summary>
    [Range(1, 100_000), Description("perturbed inputs per input (Quantus nr_samples: 200)")]
    public int Samples { get; init; } = 200;
    /// <summary>The noise's distribution; null: the metric's.</summary>
    [Description("the noise added to each input element (Quantus perturb_func): uniform (batch_uniform_noise: the default of avg-sensitivity, max-sensitivity and relative-*-stability) or gaussian (batch_gaussian_noise: local-lipschitz's default)")]
    public StabilityNoise? Noise { get; init; }
    /// <summary>Uniform radius.</summary>
    [Range(0.0, 1000.0), Description("uniform noise: up to r per input element, normalised units: U[−r, r], or U[lower_bound, r] when lower_bound is set (Quantus: 0.2 — avg- and max-sensitivity's lower_bound 0.2 = U[−0.2, 0.2], relative-*-stability's upper_bound 0.2; local-lipschitz 0.02, batch_uniform_noise's own lower_bound)")]
    public double? Radius { get; init; }
    /// <summary>One-sided noise from this bound.</summary>
    [Range(-1000.0, 1000.0), Description("uniform noise: U[lower_bound, radius] instead of U[−radius, radius] (Quantus's relative-*-stability: 0.02, its batch_uniform_noise lower_bound with upper_bound 0.2; unset for the others). It may be negative: lower_bound: -0.02 with radius: 0.02 is U[−0.02, 0.02], Quantus's batch_uniform_noise with upper_bound=None")]
    public double? LowerBound { get; init; }
    /// <summary>Gaussian σ.</summary>
    [Range(0.0, 1000.0), Description("gaussian noise: N(mean, σ²) per input element, normalised units (Quantus perturb_std: local-lipschitz 0.1; the others 0.01, batch_gaussian_noise's own)")]
    public double? Sigma { get; init; }
    /// <summary>Gaussian mean.</summary>
    [Range(-1e6, 1e6), Description("gaussian noise: the mean of N(mean, σ²), normalised units (Quantus perturb_mean: 0)")]
    public double Mean { get; init; }
    /// <summary>ε.</summary>
    [Range(0.0, 1.0), Description("relative-*-stability: replaces the denominator and the divisors' entries when they are exactly 0 (Quantus eps_min: 1e-6)")]
    public double EpsMin { get; init; } = 1e-6;
    /// <summary>Skip changed predictions.</summary>
    [Description("leave out perturbed samples whose top-1 class changed (default: true for relative-*-stability, as the paper; false otherwise). Quantus never leaves a sample out: its relative stabilities give such an input NaN, which is nan_when_prediction_changes")]
    public bool? SkipChangedPredictions { get; init; }
    /// <summary>Numerator norm.</summary>
    [Description("avg-sensitivity, max-sensitivity and local-lipschitz: the norm of Φ(x) − Φ(x') (Quantus norm_numerator: fro_norm, or local-lipschitz's distance_euclidean; l2 is the same on the flat map; linf the largest |·| (linf_norm, distance_chebyshev); l1 the sum of |·| (distance_manhattan))")]
    public MapNorm NormNumerator { get; init; } = MapNorm.Fro;
    /// <summary>Denominator norm.</summary>
    [Description("avg-sensitivity and max-sensitivity: the norm of Φ(x); local-lipschitz: the norm of x − x' (Quantus norm_denominator: fro_norm; local-lipschitz's distance_euclidean); the same choices as norm_numerator")]
    public MapNorm NormDenominator { get; init; } = MapNorm.Fro;
    /// <summary>Probabilities.</summary>
    [Description("relative-output-stability: compare the class probabilities instead of the logits (Quantus softmax; default false)")]
    public bool Softmax { get; init; }
    /// <summary>Quantus's return_nan_when_prediction_changes.</summary>
    [Description("an input whose top-1 class changed on any perturbed sample scores NaN (left out of the mean), as Quantus's return_nan_when_prediction_changes (its default: true for relative-*-stability, false otherwise; Loupe's default false, relative-*-stability then leave out the changed samples as the paper does)")]
    public bool NanWhenPredictionChanges { get; init; }
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the maps, clean and perturbed, after normalise (Quantus abs; default false for every robustness metric)")]
    public bool? Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale each map, clean and perturbed, per map: true (Quantus normalise with the metric's default normalise_func: second-moment for relative-*-stability, max for the others), false, or " + Normalisations.Functions + "; default: Quantus's per metric, true for local-lipschitz only")]
    public Normalisation? Normalise { get; init; }
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("perturbed copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
    /// <summary>Representation layer.</summary>
    [LayerName, Description("relative-representation-stability: the layer whose output (every call's, as Quantus's forward hooks keep them: a module that runs twice gives both) is the internal representation; without it and 'layers', every layer of the model but its containers (Sequential, ModuleList, ModuleDict), each output of each call, as Quantus's default (layer_names and layer_indices None); on an ONNX graph its PyTorch module paths, each value once, or every node output where it has none. Only floating-point outputs with one row per input are taken")]
    public string? Layer { get; init; }
    /// <summary>Representation layers.</summary>
    [LayerName, Description("relative-representation-stability: several layers whose outputs (every call's, as Quantus's forward hooks keep them), flattened and concatenated, are the internal representation (Quantus layer_names)")]
    public string[]? Layers { get; init; }
    /// <summary>The representation's layers: <see cref="Layer"/> then <see cref="Layers"/>, each once.</summary>
    public string[] RepresentationLayers() => [.. new[] { Layer }.Concat(Layers ?? []).OfType<string>().Where(l => l.Length > 0).Distinct()];
}

/// <summary>The noise of the robustness metrics (Quantus's perturb_func).</summary>
public enum StabilityNoise
{
    /// <summary>U[−radius, radius], or U[lower_bound, radius] (batch_uniform_noise).</summary>
    Uniform,
    /// <summary>N(mean, σ²) (batch_gaussian_noise).</summary>
    Gaussian,
}

/// <summary>Base of the robustness metrics: <c>samples</c> noisy copies per input (noise drawn per input id, one sample
/// at a time, so batches and shards give the same numbers), the method run again on them in batches of copies under the
/// memory budget (target: the classes chosen on the clean input), and a per-sample ratio reduced over samples.</summary>
// softmax: every metric takes it, as every Quantus metric's call does (it changes relative-output-stability only).
[ReadsMetric, ReadsNormaliseOver, ReadsOptions(nameof(StabilityOptions.Samples), nameof(StabilityOptions.Noise), nameof(StabilityOptions.Radius), nameof(StabilityOptions.LowerBound), nameof(StabilityOptions.Sigma), nameof(StabilityOptions.Mean), nameof(StabilityOptions.SkipChangedPredictions), nameof(StabilityOptions.NanWhenPredictionChanges), nameof(StabilityOptions.Abs), nameof(StabilityOptions.Normalise), nameof(StabilityOptions.MicroBatch), nameof(StabilityOptions.Softmax))]
public abstract class StabilityMetric : QualityMetric<StabilityOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(StabilityOptions options) => "noisy copies of the inputs";
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    public override bool HigherIsBetter => false;
    /// <summary>Gaussian (local Lipschitz) rather than uniform noise by default.</summary>
    protected virtual bool Gaussian => false;

    /// <summary>Whether these options draw Gaussian noise.</summary>
    bool GaussianWith(StabilityOptions o) => o.Noise is { } kind ? kind == StabilityNoise.Gaussian : Gaussian;
    /// <summary>The uniform noise's radius: the option, else Quantus's (the metric's bound; for a metric whose own
    /// noise is Gaussian, batch_uniform_noise's default 0.02).</summary>
    double RadiusOf(StabilityOptions o) => o.Radius ?? (Gaussian ? 0.02 : 0.2);
    /// <summary>The Gaussian noise's σ: the option, else Quantus's (local-lipschitz's perturb_std 0.1; for the others,
    /// batch_gaussian_noise's default 0.01).</summary>
    double SigmaOf(StabilityOptions o) => o.Sigma ?? (Gaussian ? 0.1 : 0.01);
    /// <summary>Quantus's default of skipping changed predictions.</summary>
    protected virtual bool SkipChangedByDefault => false;

    /// <inheritdoc/>
    protected override string? ComparesPredictedClass(StabilityOptions o) => ChangedCheck(o) is { } check ? $"set {check} to compare without it" : null;

    /// <summary>The options that make the metric compare predicted classes, as the user sets them off, or null.</summary>
    string? ChangedCheck(StabilityOptions o)
    {
        bool skip = o.SkipChangedPredictions ?? SkipChangedByDefault, nanIfChanged = o.NanWhenPredictionChanges;
        return !skip && !nanIfChanged ? null
            : $"{(skip ? "skip_changed_predictions: false" : "")}{(skip && nanIfChanged ? " and " : "")}{(nanIfChanged ? "nan_when_prediction_changes: false" : "")}";
    }
    /// <summary>Max over samples (else the mean).</summary>
    protected virtual bool TakeMax => true;
    /// <summary>Quantus's default of normalising the maps.</summary>
    protected virtual bool Normalise => false;
    /// <summary>Quantus's default normalise_func.</summary>
    protected virtual Normalisation NormaliseFunction => Normalisation.Max;
    /// <summary>Quantus's default lower bound of one-sided uniform noise (null: symmetric).</summary>
    protected virtual double? DefaultLowerBound => null;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(StabilityOptions o, AnalysisValidationContext context)
    {
        foreach (var e in OptionRules.OnlyWith(o, !GaussianWith(o), "noise: uniform", nameof(o.Radius), nameof(o.LowerBound))) yield return e;
        foreach (var e in OptionRules.OnlyWith(o, GaussianWith(o), "noise: gaussian", nameof(o.Sigma), nameof(o.Mean))) yield return e;
        if (!GaussianWith(o) && (o.LowerBound ?? DefaultLowerBound) is { } lo && lo >= RadiusOf(o))
            yield return $"option 'lower_bound' ({lo}) must be below 'radius' ({RadiusOf(o)}): the noise is drawn from U[lower_bound, radius]";
    }

    /// <summary>Whether <see cref="Ratio"/> reads the representations h, h' (else no forward computes them).</summary>
    protected virtual bool UsesRepresentation => false;

    /// <summary>One forward of a batch without gradients: the logits (N×classes, for the changed-prediction check)
    /// and what the model gives besides the maps when <see cref="UsesRepresentation"/>: named parts, one row per input
    /// (N×…), the logits, or the outputs of layers (relative-representation-stability). The representation of x and of
    /// its noisy copies are the parts both passes gave, in x's order (<see cref="Align"/>).</summary>
    protected virtual (Tensor Logits, IReadOnlyList<(string Key, Tensor Part)>? Representation) Forward(StabilityOptions o, IAnalysisContext ctx, Tensor input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        var (_, output, _) = Explain.Scores(ctx, input, selection, 0);
        return (scope.MoveToOuter(output), UsesRepresentation ? [("logits", scope.MoveToOuter(output.to(ScalarType.Float64).reshape(input.shape[0], -1)))] : null);
    }

    /// <summary>The representations of the N inputs (N×K) and of their k noisy copies (k×N×K) from the parts of both
    /// passes: the parts the copies' pass gave too, in the inputs' order. A part only one pass gave is not one row per
    /// input (an output whose first axis matched one batch's size by chance, e.g. a sequence-first tensor of 17 tokens
    /// on a batch of 17) and is left out.</summary>
    protected static (Tensor H, Tensor Hs) Align(IReadOnlyList<(string Key, Tensor Part)> clean, IReadOnlyList<(string Key, Tensor Part)> copies, long k, long n, string metric)
    {
        var byKey = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, part) in copies) byKey.TryAdd(key, part);
        var common = clean.Where(c => byKey.TryGetValue(c.Key, out var p) && p.shape[1] == c.Part.shape[1]).ToArray();
        if (common.Length == 0)
            throw new LoupeException($"{metric}: no layer of the representation gave one row per input in both the inputs' and the noisy copies' forward passes ({clean.Count} parts against {copies.Count}); name layers with an N×… output ('loupe layers' lists them)");
        var h = common.Length == 1 ? common[0].Part : cat(common.Select(c => c.Part).ToArray(), 1);
        var hs = common.Length == 1 ? byKey[common[0].Key] : cat(common.Select(c => byKey[c.Key]).ToArray(), 1);
        return (h, hs.view(k, n, -1));
    }

    /// <summary>The forward of the k noisy copies of the N inputs (k·N rows, sample-major) without gradients: their
    /// logits and what <see cref="Ratio"/> reads as h (N×K) and h' (k×N×K) — by default the copies' parts of
    /// <see cref="Forward"/> aligned with the inputs' <paramref name="clean"/> ones (<see cref="Align"/>); null when
    /// the metric reads no representation.</summary>
    protected virtual (Tensor Logits, Tensor? H, Tensor? Hs) CopiesForward(StabilityOptions o, IAnalysisContext ctx, Tensor xs, TargetSelection selection, IReadOnlyList<(string Key, Tensor Part)>? clean, long k, long n)
    {
        var (logits, parts) = Forward(o, ctx, xs, selection);
        if (clean is null || parts is null) return (logits, null, null);
        var (h, hs) = Align(clean, parts, k, n, Id);
        return (logits, h, hs);
    }

    /// <summary>The per-sample value (N): maps e, e' (N×F), inputs x, x' (N×D) and representations h, h' (N×K; null
    /// unless <see cref="UsesRepresentation"/>; as <see cref="CopiesForward"/> gives them).</summary>
    protected abstract Tensor Ratio(StabilityOptions o, Tensor e, Tensor es, Tensor x, Tensor xs, Tensor? h, Tensor? hs);

    /// <inheritdoc/>
    protected override double[] Score(StabilityOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        long n = b.N;
        var x = b.X;
        var normalise = o.Normalise.Resolve(Normalise, NormaliseFunction);
        bool abs = o.Abs ?? false;
        Tensor Flat(Tensor m)
        {
            var f = m.detach().to(ScalarType.Float64).reshape(m.shape[0], -1);
            f = Normalisations.Rows(f, normalise, b.NormaliseGroup);   // perturbed maps: k groups of the batch's n
            return abs ? f.abs() : f;
        }
        var e = Flat(b.Map);
        // The forwards without gradients run only for what needs them: the changed-prediction check and the
        // representations (one forward gives both); the maps' own passes are the method's.
        bool skip = o.SkipChangedPredictions ?? SkipChangedByDefault, nanIfChanged = o.NanWhenPredictionChanges;
        bool forward = skip || nanIfChanged || UsesRepresentation;
        var changed = zeros(n, dtype: ScalarType.Bool);                               // any sample's top-1 changed
        Tensor? top = null;
        IReadOnlyList<(string Key, Tensor Part)>? representation = null;
        if (forward)
        {
            var (logits, rep) = Forward(o, ctx, x, b.Selection);
            if (skip || nanIfChanged) top = Maps.TopClass(logits, Id, ComparesPredictedClass(o));
            representation = rep;
        }
        long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, o.MicroBatch, gradients: true) / n);
        var values = new List<Tensor>();
        bool gaussian = GaussianWith(o);
        for (int s0 = 0; s0 < o.Samples; s0 += (int)chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(chunk, o.Samples - s0);
            // One draw per sample and input: the same noise whatever the chunking. Each input's generator fills its
            // samples in order, on libtorch's threads (one generator per thread: the same numbers in any order).
            // Uniform: U[lower_bound, radius], or U[−radius, radius] without a lower bound.
            double? lower = o.LowerBound ?? DefaultLowerBound;
            double radius = RadiusOf(o), from = lower ?? -radius, sigma = SigmaOf(o);
            var noise = empty([k, n, .. x.shape.Skip(1)]);                          // k×N×C×H×W
            TensorThreads.For((int)n, i =>
            {
                for (int j = 0; j < k; j++)
                {
                    using var cell = noise[j, i];
                    if (gaussian) cell.normal_(0, 1, generator: b.Generators[i]);
                    else cell.uniform_(0, 1, generator: b.Generators[i]);
                }
            });
            noise = gaussian ? noise * sigma + o.Mean : noise * (radius - from) + from;
            var xs = (x.unsqueeze(0) + noise.to(x.dtype)).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var rows = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            var sel = b.Selection.Rows(rows);
            using var held = SideInputs.ForRows(ctx.Model, rows);   // the method and the forwards see each copy's row's side inputs
            var es = Flat(LinkedMaps(o, ctx, xs, null, sel, CopyIds(b.Batch.Ids, k)).Map).view(k, n, -1);
            Tensor? topS = null, h = null, hs = null;
            if (forward)
            {
                (var logitsS, h, hs) = CopiesForward(o, ctx, xs, sel, representation, k, n);
                if (top is not null)
                {
                    topS = logitsS.argmax(1).view(k, n);
                    changed = inner.MoveToOuter(changed.logical_or((topS != top.unsqueeze(0)).any(0)));
                }
            }
            var xsv = xs.to(ScalarType.Float64).view(k, n, -1);
            var xv = x.to(ScalarType.Float64).reshape(n, -1);
            if (hs is null)
            {
                // Row by row ratios: the k samples' rows in one call (N·k rows, sample-major).
                Tensor Rows(Tensor t) => t.unsqueeze(0).expand(k, t.shape[0], t.shape[1]).reshape(k * n, t.shape[1]);
                var r = Ratio(o, Rows(e), es.reshape(k * n, -1), Rows(xv), xsv.reshape(k * n, -1), null, null).view(k, n);
                if (skip) r = where(topS! == top!.unsqueeze(0), r, full_like(r, double.NaN));
                values.AddRange(r.unbind(0).Select(t => inner.MoveToOuter(t)));
            }
            else
                for (int j = 0; j < k; j++)
                {
                    // Each sample's temporaries (float64 copies of every layer's output, by default) freed before the next.
                    using var one = NewDisposeScope();
                    var r = Ratio(o, e, es[j], xv, xsv[j], h, hs[j]);
                    if (skip) r = where(topS![j] == top!, r, full_like(r, double.NaN));
                    values.Add(inner.MoveToOuter(one.MoveToOuter(r)));
                }
        }
        var all = stack(values, 1);                                                   // N×samples
        var finite = all.isnan().logical_not();
        var reduced = TakeMax ? all.nan_to_num(double.NegativeInfinity).amax([1])
            : where(finite, all, zeros_like(all)).sum(1) / finite.sum(1).to(ScalarType.Float64);   // NaN when no sample is left
        reduced = where(reduced == double.NegativeInfinity, full_like(reduced, double.NaN), reduced);
        if (nanIfChanged) reduced = where(changed, full_like(reduced, double.NaN), reduced);
        return reduced.ToArray<double>();
    }

    /// <summary>Frobenius (L2 over all values) norm per row.</summary>
    protected static Tensor Norm(Tensor t) => t.norm(1);

    /// <summary>The norm <paramref name="norm"/> of each row.</summary>
    protected static Tensor Of(MapNorm norm, Tensor t) => norm switch
    {
        MapNorm.Linf => t.abs().amax([1]),
        MapNorm.L1 => t.abs().sum(1),
        _ => Norm(t),
    };
}

/// <summary><c>avg-sensitivity</c> (Yeh et al. 2019; Quantus AvgSensitivity): the mean over samples x' = x + U[−r, r]
/// of ‖Φ(x) − Φ(x')‖ / ‖Φ(x)‖ (Frobenius norms, maps as given). Lower is better.</summary>
public sealed class AvgSensitivity : MapSensitivity
{
    /// <inheritdoc/>
    public override string Id => "avg-sensitivity";
    /// <inheritdoc/>
    protected override bool TakeMax => false;
}

/// <summary><c>max-sensitivity</c> (Yeh et al. 2019; Quantus MaxSensitivity): the max over samples x' = x + U[−r, r]
/// of ‖Φ(x) − Φ(x')‖ / ‖Φ(x)‖ (Frobenius norms, maps as given). Lower is better. Captum's sensitivity_max (L∞-ball
/// noise of radius 0.02, 10 samples, ‖Φ(x) − Φ(x')‖ alone) is <c>sensitivity-max</c>.</summary>
public sealed class MaxSensitivity : MapSensitivity
{
    /// <inheritdoc/>
    public override string Id => "max-sensitivity";
}

/// <summary>Base of Quantus's two sensitivities: a sample's value is ‖Φ(x) − Φ(x')‖_F / ‖Φ(x)‖_F (Quantus's
/// difference, fro_norm numerator and denominator), unguarded as in Quantus: a map of zeros has no relative change —
/// +∞ when a sample's map is not zero, no value (NaN, left out as a skipped sample) when it is, so an input whose every
/// map is zero scores NaN, not the best score 0 (a Grad-CAM whose ReLU zeroes the whole map is not "stable").</summary>
[ReadsOptions(nameof(StabilityOptions.NormNumerator), nameof(StabilityOptions.NormDenominator))]
public abstract class MapSensitivity : StabilityMetric
{
    /// <inheritdoc/>
    protected override Tensor Ratio(StabilityOptions o, Tensor e, Tensor es, Tensor x, Tensor xs, Tensor? h, Tensor? hs) =>
        Of(o.NormNumerator, e - es) / Of(o.NormDenominator, e);
}

/// <summary><c>local-lipschitz</c> (Alvarez-Melis &amp; Jaakkola 2018; Quantus LocalLipschitzEstimate): the max over
/// samples x' = x + N(0, σ²) of ‖Φ(x) − Φ(x')‖₂ / ‖x − x'‖₂, maps normalised by their max |·| (Quantus default).
/// Lower is better.</summary>
[ReadsOptions(nameof(StabilityOptions.NormNumerator), nameof(StabilityOptions.NormDenominator))]
public sealed class LocalLipschitz : StabilityMetric
{
    /// <inheritdoc/>
    public override string Id => "local-lipschitz";
    /// <inheritdoc/>
    protected override bool Gaussian => true;
    /// <inheritdoc/>
    protected override bool Normalise => true;
    /// <inheritdoc/>
    protected override Tensor Ratio(StabilityOptions o, Tensor e, Tensor es, Tensor x, Tensor xs, Tensor? h, Tensor? hs) =>
        Of(o.NormNumerator, e - es) / Of(o.NormDenominator, x - xs).clamp_min(1e-30);
}

/// <summary>Base of the relative stabilities (Agarwal et al. 2022; Quantus 0.6): noise U[0.02, 0.2] per input element,
/// samples whose prediction changed left out, the max over samples of ‖(Φ(x) − Φ(x'))/Φ(x)‖ over a denominator that
/// is replaced by ε when it is exactly 0, as are the zero entries of the divisors (Quantus's guards).</summary>
[ReadsOptions(nameof(StabilityOptions.EpsMin))]
public abstract class RelativeStability : StabilityMetric
{
    /// <inheritdoc/>
    protected override bool SkipChangedByDefault => true;
    /// <inheritdoc/>
    protected override double? DefaultLowerBound => 0.02;
    /// <inheritdoc/>
    protected override Normalisation NormaliseFunction => Normalisation.SecondMoment;

    /// <summary>The denominator of the ratio (N).</summary>
    protected abstract Tensor Denominator(StabilityOptions o, Tensor x, Tensor xs, Tensor? h, Tensor? hs);

    /// <inheritdoc/>
    protected sealed override Tensor Ratio(StabilityOptions o, Tensor e, Tensor es, Tensor x, Tensor xs, Tensor? h, Tensor? hs)
    {
        var d = Denominator(o, x, xs, h, hs);
        return Relative(e, es, o.EpsMin) / (d + (d == 0).to(d.dtype) * o.EpsMin);
    }

    /// <summary>‖(a − b)/a‖ with a's zero entries replaced by ε (Quantus's guard).</summary>
    protected static Tensor Relative(Tensor a, Tensor b, double eps) => Norm((a - b) / (a + (a == 0).to(a.dtype) * eps));
}

/// <summary><c>relative-input-stability</c>: the denominator is ‖(x − x')/x‖. Lower is better.</summary>
public sealed class RelativeInputStability : RelativeStability
{
    /// <inheritdoc/>
    public override string Id => "relative-input-stability";
    /// <inheritdoc/>
    protected override Tensor Denominator(StabilityOptions o, Tensor x, Tensor xs, Tensor? h, Tensor? hs) => Relative(x, xs, o.EpsMin);
}

/// <summary><c>relative-output-stability</c>: the denominator is the change of the logits, ‖h(x) − h(x')‖₂ (the
/// paper's and Quantus's: not relative to h(x)). Lower is better.</summary>
public sealed class RelativeOutputStability : RelativeStability
{
    /// <inheritdoc/>
    public override string Id => "relative-output-stability";
    /// <inheritdoc/>
    protected override bool UsesRepresentation => true;
    /// <inheritdoc/>
    protected override Tensor Denominator(StabilityOptions o, Tensor x, Tensor xs, Tensor? h, Tensor? hs) =>
        o.Softmax ? Norm(h!.softmax(1) - hs!.softmax(1)) : Norm(h! - hs!);
}
