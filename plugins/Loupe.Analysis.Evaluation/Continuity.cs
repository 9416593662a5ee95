using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Options of <c>continuity</c>.</summary>
public sealed record ContinuityOptions : MetricOptions, IConstantFill
{
    /// <summary>Steps.</summary>
    [Range(1, 4096), Description("translated copies per input: shifts of shift, 2·shift, ..., steps·shift pixels to the right (Quantus nr_steps: 28)")]
    public int Steps { get; init; } = 10;
    /// <summary>Shift per step.</summary>
    [Range(1, 4096), Description("pixels per step (Quantus uses H·W / nr_steps, which exceeds the image width; Loupe shifts by whole pixels)")]
    public int Shift { get; init; } = 1;
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed maps (Quantus default: true)")]
    public bool Abs { get; init; } = true;
    /// <summary>Normalise.</summary>
    [Description("divide each map by its max |·| (Quantus default: true)")]
    public bool Normalise { get; init; } = true;
    /// <summary>Fill.</summary>
    [OrConstant(nameof(BaselineValue)), Description("what enters at the left edge: min (Quantus 'black': the image minimum), max (Quantus 'white'), black, zero, mean, or a constant in the model's input space (one value or one per channel)")]
    public Fill Baseline { get; init; } = Fill.Min;
    /// <summary>Constant fill (<c>baseline: 0.5</c> binds here).</summary>
    [Description("a constant given to 'baseline': one value or one per channel, in the model's input space")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("translated copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
}

/// <summary><c>continuity</c> (Montavon et al. 2018; Quantus Continuity): the strongest variation of the explanation
/// under translation, max over k = 1..steps of ‖R(x) − R(x_k)‖₁ / ‖x − x_k‖₂, x_k the input moved k·shift pixels to
/// the right (the baseline entering at the left), R the channel-summed map (|·| and normalised by its max |·| by
/// default), the method re-run on the copies (batched) for the classes chosen on x. Quantus returns per-patch curves;
/// Loupe reports the paper's ratio. Lower is better.</summary>
public sealed class Continuity : QualityMetric<ContinuityOptions>
{
    /// <inheritdoc/>
    public override string Id => "continuity";
    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <summary>x moved <paramref name="dx"/> pixels to the right, <paramref name="fill"/> entering at the left.</summary>
    public static Tensor Translate(Tensor x, Tensor fill, long dx)
    {
        long w = x.shape[3];
        if (dx >= w) return fill.clone();
        return cat([fill.narrow(3, 0, dx), x.narrow(3, 0, w - dx)], 3);
    }

    /// <inheritdoc/>
    protected override double[] Score(ContinuityOptions o, MetricBatch b)
    {
        using var scope = NewDisposeScope();
        var ctx = b.Context;
        var x = b.X;
        long n = b.N;
        var fill = b.Baseline(o.Baseline, o.BaselineValue);
        var r = b.Features(o.Abs, o.Normalise);
        long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, o.MicroBatch, gradients: true) / n);
        var worst = full(n, double.NegativeInfinity, dtype: ScalarType.Float64);
        for (int k0 = 1; k0 <= o.Steps; k0 += (int)chunk)
        {
            using var inner = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(chunk, o.Steps - k0 + 1);
            var copies = stack(Enumerable.Range(k0, k).Select(s => Translate(x, fill, (long)s * o.Shift)).ToArray());   // k×N×C×H×W
            var xs = copies.reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var sel = b.Selection.Rows(Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray());
            var maps = LinkedMaps(o, ctx, xs, null, sel).Map;
            var rs = new MetricBatch(ctx, b.Batch with { Input = xs }, maps, sel, [], null).Features(o.Abs, o.Normalise).view(k, n, -1);
            var dr = (rs - r.unsqueeze(0)).abs().sum(2);                                                   // k×N
            var dx = (copies - x.unsqueeze(0)).to(ScalarType.Float64).reshape(k, n, -1).norm(2);           // k×N
            var ratio = where(dx > 0, dr / dx.clamp_min(1e-300), zeros_like(dr));
            worst = inner.MoveToOuter(maximum(worst, ratio.amax([0])));
        }
        return worst.ToArray<double>();
    }
}
