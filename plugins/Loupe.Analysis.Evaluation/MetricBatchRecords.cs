using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Evaluation;

/// <summary>What a metric records of a batch besides its scores: the curves they were reduced from, and rows it scores
/// across the run's inputs.</summary>
public sealed partial class MetricBatch
{
    /// <summary>The curves the scores were reduced from, when the metric recorded them (<see cref="RecordCurves"/>): one
    /// row per input, as wide as the axis, NaN past a row's own length.</summary>
    public (double[][] Rows, CurveAxis Axis)? Curves { get; private set; }

    /// <summary>Records the curves (N×T) the scores are reduced from: row i's first <paramref name="lengths"/>[i] points
    /// (all T when null), padded with NaN to the axis's width. Written by <see cref="QualityMetric{TOptions}"/> as
    /// <c>&lt;key&gt;_curve.npy</c>, <c>.json</c> and a plot, and as one series per named point.</summary>
    public void RecordCurves(Tensor curves, long[]? lengths, CurveAxis axis)
    {
        long t = curves.shape[1], width = axis.X.Length;
        var values = curves.to(ScalarType.Float64).cpu().contiguous().ToArray<double>();
        var rows = new double[N][];
        for (int i = 0; i < N; i++)
        {
            long length = lengths?[i] ?? t;
            if (length > width) throw new InvalidOperationException($"a curve of {length} points on an axis of {width}");
            rows[i] = Enumerable.Range(0, (int)width).Select(j => j < length ? values[i * t + j] : double.NaN).ToArray();
        }
        Curves = (rows, axis);
    }

    /// <summary>Per-input rows a metric scores across the run's inputs once it has seen them all
    /// (<see cref="RecordAcross"/>), or null.</summary>
    public double[][]? Across { get; private set; }

    /// <summary>Records this batch's rows (N×T) for <see cref="QualityMetric{TOptions}.ScoreAcross"/>: the metric's
    /// score is then a function of every input's row, not one value per input.</summary>
    public void RecordAcross(Tensor rows)
    {
        long t = rows.shape[1];
        var values = rows.to(ScalarType.Float64).cpu().contiguous().ToArray<double>();
        Across = Enumerable.Range(0, (int)N).Select(i => values.AsSpan((int)(i * t), (int)t).ToArray()).ToArray();
    }
}
