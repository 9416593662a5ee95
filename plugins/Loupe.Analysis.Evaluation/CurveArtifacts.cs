using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Analysis.Evaluation;

/// <summary>The artifacts of a metric's per-input curves.</summary>
public static class CurveArtifacts
{
    /// <summary><c>&lt;key&gt;_curve.json</c> (the axis; per point the mean and std over the inputs that reach it) and the
    /// plot of the mean curve over the inputs' curves (N×T rows, NaN past a row's end).</summary>
    public static void Write(IArtifactSink output, string id, string of, CurveAxis axis, NdArray rows)
    {
        int n = (int)rows.Shape[0], t = (int)rows.Shape[1];
        var stats = Enumerable.Range(0, t).Select(j => MetricWriter.MeanStd(Enumerable.Range(0, n).Select(i => (double)rows.Data[i * t + j]).ToList())).ToList();
        static JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        output.Json(id.Replace('-', '_') + "_curve", new JsonObject
        {
            ["metric"] = id, ["of"] = of, ["x"] = new JsonArray(axis.X.Select(v => (JsonNode?)v).ToArray()),
            ["x_title"] = axis.XTitle, ["y_title"] = axis.YTitle,
            ["points"] = axis.Points is null ? null : new JsonArray(axis.Points.Select(p => (JsonNode?)p).ToArray()),
            ["note"] = "rows of <key>_curve.npy: one curve per input, NaN past its own length; mean and std per point over the inputs that reach it",
            ["mean"] = new JsonArray(stats.Select(s => Num(s.Mean)).ToArray()),
            ["std"] = new JsonArray(stats.Select(s => Num(s.Std)).ToArray()),
        });
        output.Figure(id.Replace('-', '_') + "_curve", null, () => Plot(id, of, axis, rows));
    }

    /// <summary>The plot: each input's curve held at its last value past its end (nothing more is removed), their mean,
    /// up to the longest curve.</summary>
    static RgbImage Plot(string id, string of, CurveAxis axis, NdArray rows)
    {
        int n = (int)rows.Shape[0], t = (int)rows.Shape[1];
        int shown = Math.Max(1, Enumerable.Range(0, n).Select(i => Enumerable.Range(0, t).LastOrDefault(j => !float.IsNaN(rows.Data[i * t + j]), -1) + 1).DefaultIfEmpty(1).Max());
        var held = Enumerable.Range(0, n).Select(i =>
        {
            var ys = new double[shown];
            double last = double.NaN;
            for (int j = 0; j < shown; j++) ys[j] = last = float.IsNaN(rows.Data[i * t + j]) ? last : rows.Data[i * t + j];
            return ys;
        }).ToList();
        bool ragged = held.Count > 0 && Enumerable.Range(0, n).Any(i => float.IsNaN(rows.Data[i * t + shown - 1]));
        var mean = Enumerable.Range(0, shown).Select(j => MetricWriter.MeanStd(held.Select(h => h[j]).ToList()).Mean).ToArray();
        return Plots.Lines(axis.X[..shown], [(ragged ? "mean over inputs (each held at its end)" : "mean over inputs", mean)],
            $"{id} of '{of}'", axis.XTitle, axis.YTitle, faint: held.Take(64).ToList());
    }
}
