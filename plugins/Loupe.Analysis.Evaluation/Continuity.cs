using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>The shifts <c>continuity</c> translates its inputs by.</summary>
public enum ContinuitySweep
{
    /// <summary>shift, 2·shift, …, to the right.</summary>
    Right,
    /// <summary>Quantus 0.6's: −W + k·⌊(2W+1)/steps⌋, k = 1..steps.</summary>
    Quantus,
}

/// <summary>Options of <c>continuity</c>.</summary>
public sealed record ContinuityOptions : NormalisedMetricOptions, IConstantFill
{
    /// <summary>Steps.</summary>
    [Range(1, 4096), Description("translated copies per input (default 10 for sweep: right; Quantus nr_steps: 28, the default for sweep: quantus)")]
    public int? Steps { get; init; }
    /// <summary>Which shifts.</summary>
    [Description("right (shifts of shift, 2·shift, ..., steps·shift pixels to the right, Montavon et al.'s sweep) or quantus (Quantus 0.6: steps shifts of −W + k·⌊(2W+1)/steps⌋ pixels, k = 1..steps, left and right, the distance ‖x − x_k‖₂ + 1e-9)")]
    public ContinuitySweep Sweep { get; init; } = ContinuitySweep.Right;
    /// <summary>Quantus's return_nan_when_prediction_changes.</summary>
    [Description("an input whose top-1 class on any shifted copy differs from the explained class scores NaN (Quantus return_nan_when_prediction_changes; default false)")]
    public bool NanWhenPredictionChanges { get; init; }
    /// <summary>Shift per step.</summary>
    [Range(1, 4096), Description("sweep right: pixels per step")]
    public int Shift { get; init; } = 1;
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed maps (Quantus default: true)")]
    public bool Abs { get; init; } = true;
    /// <summary>Normalise.</summary>
    [Description("rescale each map first: true (Quantus normalise_by_max; the default), false, or " + Normalisations.Functions)]
    public Normalisation Normalise { get; init; } = Normalisation.Default;
    /// <summary>Fill.</summary>
    [OrConstant(nameof(BaselineValue)), Description("what enters at the left edge: min (the image minimum: Quantus's Continuity always fills with its 'black', whatever perturb_baseline says), max (the image maximum), black, zero, mean, or a constant in the model's input space (one value or one per channel)")]
    public Fill Baseline { get; init; } = Fill.Min;
    /// <summary>Constant fill (<c>baseline: 0.5</c> binds here).</summary>
    [Description("a constant given to 'baseline': one value or one per channel, in the model's input space")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("translated copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
    /// <summary>What a map's values are.</summary>
    [Description("pixels (the default: the channel-summed map) or values (every value of the maps as the method gives them, a per-channel map's channels apart, as Quantus flattens the a_batch: normalise and |·| per value before the L1 distance)")]
    public FeatureUnit Features { get; init; }

    /// <summary>The maps' values as these options read them (N×features).</summary>
    internal Tensor Values(MetricBatch b) => Features == FeatureUnit.Values ? b.MapValues(Abs, Normalise.Resolve()) : b.Features(Abs, Normalise.Resolve());
}

/// <summary><c>continuity</c> (Montavon et al. 2018; Quantus Continuity): the strongest variation of the explanation
/// under translation, max over k = 1..steps of ‖R(x) − R(x_k)‖₁ / ‖x − x_k‖₂, x_k the input moved k·shift pixels to
/// the right (the baseline entering at the left), R the channel-summed map (|·| and normalised by its max |·| by
/// default), the method re-run on the copies (batched) for the classes chosen on x. <c>sweep: quantus</c> takes
/// Quantus 0.6's shifts (<see cref="Shifts"/>) and its ‖x − x_k‖₂ + 1e-9. Lower is better.</summary>
public sealed class Continuity : QualityMetric<ContinuityOptions>
{
    /// <inheritdoc/>
    protected override string? ExplainsAgain(ContinuityOptions options) => "shifted copies of the inputs";

    /// <inheritdoc/>
    protected override string? ComparesPredictedClass(ContinuityOptions options) => options.NanWhenPredictionChanges ? "set nan_when_prediction_changes: false" : null;
    /// <inheritdoc/>
    protected override bool HoldsSideInputs => true;

    /// <inheritdoc/>
    public override string Id => "continuity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <inheritdoc/>
    protected override IEnumerable<string> ValidateMetric(ContinuityOptions o, AnalysisValidationContext context) =>
        OptionRules.OnlyWith(o, o.Sweep == ContinuitySweep.Right, "sweep: right (Quantus's sweep spreads its steps over the width)", nameof(o.Shift));

    /// <summary>x moved <paramref name="dx"/> pixels to the right (left when negative), <paramref name="fill"/>
    /// entering at the other side (Quantus's batched_translation).</summary>
    public static Tensor Translate(Tensor x, Tensor fill, long dx)
    {
        long w = x.shape[3];
        if (Math.Abs(dx) >= w) return fill.clone();
        if (dx == 0) return x.clone();
        return dx > 0 ? cat([fill.narrow(3, 0, dx), x.narrow(3, 0, w - dx)], 3) : cat([x.narrow(3, -dx, w + dx), fill.narrow(3, w + dx, -dx)], 3);
    }

    /// <summary>The shifts of the sweep, in pixels (positive: to the right).</summary>
    public static long[] Shifts(ContinuityOptions o, long width)
    {
        if (o.Sweep == ContinuitySweep.Right) return [.. Enumerable.Range(1, o.Steps ?? 10).Select(k => (long)k * o.Shift)];
        int steps = o.Steps ?? 28;
        long dx = (2 * width + 1) / steps;
        return [.. Enumerable.Range(1, steps).Select(k => -width + k * dx)];
    }

    /// <inheritdoc/>
    protected override double[] Score(ContinuityOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        var x = b.X;
        long n = b.N;
        var fill = b.Baseline(o.Baseline, o.BaselineValue);
        var r = o.Values(b);
        var shifts = Shifts(o, x.shape[3]);
        bool quantus = o.Sweep == ContinuitySweep.Quantus;
        long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, o.MicroBatch, gradients: true) / n);
        var worst = full(n, double.NegativeInfinity, dtype: ScalarType.Float64);
        var changed = zeros(n, dtype: ScalarType.Bool);
        for (int k0 = 0; k0 < shifts.Length; k0 += (int)chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(chunk, shifts.Length - k0);
            var copies = stack(shifts.Skip(k0).Take(k).Select(dx => Translate(x, fill, dx)).ToArray());   // k×N×C×H×W
            var xs = copies.reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var rows = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            var sel = b.Selection.Rows(rows);
            using var held = SideInputs.ForRows(ctx.Model, rows);   // the method and the forwards see each copy's row's side inputs
            var maps = LinkedMaps(o, ctx, xs, null, sel, CopyIds(b.Batch.Ids, k)).Map;
            var rs = o.Values(new MetricBatch(ctx, b.Batch with { Input = xs }, maps, sel, [], null) { NormaliseGroup = b.NormaliseGroup }).view(k, n, -1);
            var dr = (rs - r.unsqueeze(0)).abs().sum(2);                                                   // k×N
            var dx = (copies - x.unsqueeze(0)).to(ScalarType.Float64).reshape(k, n, -1).norm(2);           // k×N
            // Quantus divides by ‖x − x_k‖₂ + 1e-9; the right sweep never meets x_k = x but where it does (a constant
            // image) the map cannot have moved either: 0.
            var ratio = quantus ? dr / (dx + 1e-9) : where(dx > 0, dr / dx.clamp_min(1e-300), zeros_like(dr));
            worst = inner.MoveToOuter(maximum(worst, ratio.amax([0])));
            if (o.NanWhenPredictionChanges && b.Selection.Classes is { } classes)
            {
                var (_, logits, _) = Explain.Scores(ctx, xs, sel, 0);
                var target = tensor(classes).repeat(k);
                changed = inner.MoveToOuter(changed.logical_or((Maps.TopClass(logits, Id, "set nan_when_prediction_changes: false") != target).view(k, n).any(0)));
            }
        }
        if (o.NanWhenPredictionChanges) worst = where(changed, full_like(worst, double.NaN), worst);
        return worst.ToArray<double>();
    }
}
