using System.Text.Json.Nodes;
using static Loupe.Evaluation.Tests.QualityTests;

namespace Loupe.Evaluation.Tests;

/// <summary>relative-representation-stability's representation as Quantus's forward hooks make it: layers by name
/// (layer_names), every call's output of each, concatenated. One sample, the same step
/// id and seed in every run, so the same noise and the same numerator n: a representation made of parts with relative
/// changes d₁, d₂, … has ‖·‖² = Σ dᵢ², so its score r = n / ‖·‖ gives 1/r² = Σ 1/rᵢ² over runs that each take one part.</summary>
public class RepresentationStabilityTests
{
    static double[] Scores(string model, string with)
    {
        var (r, _) = SeededRegionRun(7, 19, model, $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: rrs, uses: relative-representation-stability, with: { of: gxi, samples: 1{{with}} } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        return JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rrs", "relative_representation_stability.json")))!["inputs"]!
            .AsArray().Select(i => i!["value"]!.GetValue<double>()).ToArray();
    }

    /// <summary>1/r² of the whole is the sum of the parts' 1/r² (to 1e-6 relative).</summary>
    static void Sums(double[] whole, params double[][] parts)
    {
        for (int i = 0; i < whole.Length; i++)
        {
            double want = 1 / Math.Sqrt(parts.Sum(p => 1 / (p[i] * p[i])));
            Assert.True(Math.Abs(whole[i] - want) <= 1e-6 * want, $"rrs[{i}]: {whole[i]} against {want} from its parts");
        }
    }

    static void Same(double[] a, double[] b, string what)
    {
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-9 * Math.Abs(b[i]), $"{what} [{i}]: {a[i]} against {b[i]}");
    }

    [Fact]
    public void RepresentationStabilityConcatenatesItsLayers() =>
        Sums(Scores("region-test", ", layers: [conv, relu]"), Scores("region-test", ", layer: conv"), Scores("region-test", ", layers: [relu]"));

    [Fact]
    public void A_module_that_runs_twice_gives_both_calls_whether_named_or_by_default()
    {
        // ReuseNet: conv → relu (1st call) → first (identity) → conv2 → relu (2nd call) → fc. Quantus hooks the ReLU
        // module, so its layer_names=["relu"] keeps both calls: the default (every layer, every call) is the four
        // single-call layers plus 'relu' — which a last-call-only 'relu' would miss by first's part (= the 1st call).
        var all = Scores("reuse-test", "");
        var relu = Scores("reuse-test", ", layer: relu");
        var others = Scores("reuse-test", ", layers: [conv, first, conv2, fc]");
        Sums(all, others, relu);
        // ... and 'relu' is more than its first call ('first' is that call's output): the second call counts too.
        var first = Scores("reuse-test", ", layer: first");
        for (int i = 0; i < 3; i++) Assert.True(1 / (relu[i] * relu[i]) > 1.01 / (first[i] * first[i]), $"rrs[{i}]: relu {relu[i]}, first call {first[i]}");
        // Every layer named is the default.
        Same(Scores("reuse-test", ", layers: [conv, relu, first, conv2, fc]"), all, "every layer named");
        Same(Scores("region-test", ", layers: [conv, relu, fc]"), Scores("region-test", ""), "region CNN, every layer named");
    }

    [Fact]
    public void Only_relative_representation_stability_takes_layers()
    {
        var (bad, _) = SeededRegionRun(7, 19, "reuse-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ll, uses: local-lipschitz, with: { of: gxi, layer: relu } }
              - { id: ros, uses: relative-output-stability, with: { of: gxi, layers: [conv] } }
            """);
        Assert.Equal(2, bad.ExitCode);
        var errors = string.Join("\n", bad.Errors.Select(e => e.Message));
        Assert.Contains("option 'layer' applies to relative-representation-stability, not to local-lipschitz", errors);
        Assert.Contains("option 'layers' applies to relative-representation-stability, not to relative-output-stability", errors);
    }
}
