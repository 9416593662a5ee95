using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>eMPRT's extra scores (Quantus EfficientMPRT <c>compute_extra_scores</c>): beside the maps' complexity, the
/// model's — the Shannon entropy of its softmax output — at the same points, and per input the deltas and fractions of
/// both between the original and the last point, their ratio, the mean map complexity over the randomised points and
/// the Spearman ρ of the two curves.</summary>
public static class EmprtExtra
{
    /// <summary>The extra scores, in Quantus's order, under Loupe's series names (<c>mprt_</c> + Quantus's name
    /// without <c>scores_</c>).</summary>
    public static readonly string[] Names =
    [
        "mprt_delta_explanation", "mprt_fraction_explanation", "mprt_delta_model", "mprt_fraction_model",
        "mprt_delta_explanation_vs_models", "mprt_average_complexity", "mprt_correlation_model_vs_explanation_complexity",
    ];

    /// <summary>The entropy (nats) of the model's softmax output for each row: the probabilities in float32, as the
    /// model gives them (Quantus's predict with softmax), then −Σ p ln p of p / Σp in float64 (scipy's entropy).</summary>
    public static double[] OutputEntropies(MetricBatch b)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (output, capture, _, _) = Explain.Forward(b.Context.Model, b.Context.Target, b.X, [], forGradients: false, b.Selection);
        using (capture)
        {
            var p = nn.functional.softmax(output.reshape(b.N, -1).to(ScalarType.Float32), 1).to(ScalarType.Float64);
            p /= p.sum(1, keepdim: true);
            var terms = where(p > 0, -p * p.log(), zeros_like(p));
            return terms.sum(1).ToArray<double>();
        }
    }

    /// <summary>Per input, the extra scores (<see cref="Names"/>) from its map-complexity curve and its model-entropy
    /// curve (original point first, the same points).</summary>
    public static double[] Of(double[] maps, double[] model)
    {
        static double Fraction(double a, double b) => a != 0 ? b / a : double.NaN;
        double e0 = maps[0], e1 = maps[^1], m0 = model[0], m1 = model[^1];
        double fe = Fraction(e0, e1), fm = Fraction(m0, m1);
        return
        [
            e1 - e0, fe, m1 - m0, fm, Fraction(fm, fe),
            maps.Skip(1).DefaultIfEmpty(double.NaN).Average(),
            Maps.Pearson(Maps.Ranks(model), Maps.Ranks(maps)),   // scipy's spearmanr: NaN for a constant curve
        ];
    }

    /// <summary>Writes the extra scores: a mean/std series per score (metrics.csv, <c>expect:</c>) and
    /// <c>mprt_extra.json</c> with each input's values and both curves.</summary>
    public static void Write(MetricWriter writer, IArtifactSink output, IReadOnlyList<string> ids, IReadOnlyList<double[]> maps, IReadOnlyList<double[]> model)
    {
        var rows = Enumerable.Range(0, ids.Count).Select(i => Of(maps[i], model[i])).ToArray();
        for (int k = 0; k < Names.Length; k++) writer.Stat(Names[k], rows.Select(r => r[k]).ToList());
        static JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        output.Json("mprt_extra", new JsonObject
        {
            ["note"] = "Quantus EfficientMPRT compute_extra_scores: 'model' is the entropy (nats) of the softmax output at each point of the curve; fractions are last / original (null where the original is 0)",
            ["inputs"] = new JsonArray(ids.Select((id, i) =>
            {
                var row = new JsonObject { ["id"] = id };
                for (int k = 0; k < Names.Length; k++) row[Names[k]["mprt_".Length..]] = Num(rows[i][k]);
                row["model_curve"] = new JsonArray(model[i].Select(Num).ToArray());
                return (JsonNode)row;
            }).ToArray()),
        });
    }
}
