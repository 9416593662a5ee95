using System.Text.Json.Nodes;

namespace Loupe.Evaluation.Tests;

/// <summary>pytorch-grad-cam's confidence metrics (confidence-change; road-confidence: ROADMostRelevantFirst,
/// ROADLeastRelevantFirst, their averages, ROADCombined) against the library's behaviour written out in numpy
/// (tests/fixtures/make_confidence_fixtures.py) on the region CNN with the fixed maps: a gradient × input map, signed
/// noise, a one-hot map (whose ties at 0 make every percentile below 99.9 remove the whole image) and a positive map.</summary>
public class ConfidenceMetricTests
{
    static string Fixture(string name) => Env.QualityFixture(name);

    static readonly JsonObject Expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected_confidence.json")))!.AsObject();

    static double[] Want(string key) => Expected[key]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();

    static JsonNode Step(Loupe.Core.RunResult r, string id) => r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == id)!;

    [Fact]
    public void MatchPytorchGradCamsMetricsWrittenOutInNumpy()
    {
        var r = Env.FixtureRun("""
              - { id: cc, uses: confidence-change, with: { of: m } }
              - { id: cc_drop, uses: confidence-change, with: { of: m, mode: drop } }
              - { id: cc_increase, uses: confidence-change, with: { of: m, mode: increase } }
              - { id: cc_softmax, uses: confidence-change, with: { of: m, softmax: true } }
              - { id: rc_morf, uses: road-confidence, with: { of: m, noise: 0 } }
              - { id: rc_lerf, uses: road-confidence, with: { of: m, noise: 0, order: lerf } }
              - { id: rc_combined, uses: road-confidence, with: { of: m, noise: 0, order: combined } }
              - { id: rc_p, uses: road-confidence, with: { of: m, noise: 0, percentiles: [25, 80, 99.5] } }
              - { id: rc_noisy, uses: road-confidence, with: { of: m } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        foreach (var key in new[] { "cc", "cc_drop", "cc_increase", "cc_softmax", "rc_morf", "rc_lerf", "rc_combined", "rc_p" })
        {
            var metric = key.StartsWith("cc", StringComparison.Ordinal) ? "confidence_change" : "road_confidence";
            var got = Env.InputValues(r, key, metric);
            var want = Want(key);
            Assert.Equal(want.Length, got.Length);
            for (int i = 0; i < want.Length; i++)
                Assert.True(Math.Abs(got[i] - want[i]) <= 1e-4 * Math.Max(1, Math.Abs(want[i])), $"{key}[{i}]: {got[i]} against numpy {want[i]}");
        }
        // Directions: MoRF and drop lower is better; LeRF, combined, change and increase higher.
        Assert.False(Step(r, "rc_morf")["directions"]!["road_confidence"]!.GetValue<bool>());
        Assert.True(Step(r, "rc_lerf")["directions"]!["road_confidence"]!.GetValue<bool>());
        Assert.True(Step(r, "rc_combined")["directions"]!["road_confidence"]!.GetValue<bool>());
        Assert.False(Step(r, "cc_drop")["directions"]!["confidence_change"]!.GetValue<bool>());
        Assert.True(Step(r, "cc_increase")["directions"]!["confidence_change"]!.GetValue<bool>());
        // One series per percentile; their means average to the score.
        var p25 = Step(r, "rc_p")["metrics"]!["road_confidence_p25_mean"]!.GetValue<double>();
        Assert.True(double.IsFinite(p25));
        // The noise (σ = 0.01, seeded per input) moves the scores a little, not the picture.
        var noisy = Env.InputValues(r, "rc_noisy", "road_confidence");
        var clean = Want("rc_morf");
        for (int i = 0; i < noisy.Length; i++)
            Assert.True(Math.Abs(noisy[i] - clean[i]) <= 0.05 * Math.Max(1, Math.Abs(clean[i])) && noisy[i] != clean[i], $"input {i}: {noisy[i]} vs σ = 0 {clean[i]}");
    }

    /// <summary>ARCC and its parts against numpy, with gradient × input as the evaluated method (coherency re-runs it on
    /// x ⊙ map: x²·(20/64)² in the region, not a multiple of the map).</summary>
    [Fact]
    public void ArccMatchesPytorchGradCamsWrittenOutInNumpy()
    {
        var r = Env.FixtureRun("""
              - { id: gxi, uses: gradient-x-input }
              - { id: arcc, uses: arcc, with: { of: gxi, noise: 0 } }
              - { id: arcc_coherency, uses: arcc, with: { of: gxi, part: coherency } }
              - { id: arcc_complexity, uses: arcc, with: { of: gxi, part: complexity } }
              - { id: arcc_road, uses: arcc, with: { of: gxi, part: road, noise: 0 } }
              - { id: arcc_softmax, uses: arcc, with: { of: gxi, noise: 0, softmax: true } }
              - { id: arcc_road_softmax, uses: arcc, with: { of: gxi, part: road, noise: 0, softmax: true } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        foreach (var key in new[] { "arcc", "arcc_coherency", "arcc_complexity", "arcc_road", "arcc_softmax", "arcc_road_softmax" })
        {
            var got = Env.InputValues(r, key, "arcc");
            var want = Want(key);
            for (int i = 0; i < want.Length; i++)
                Assert.True(Math.Abs(got[i] - want[i]) <= 1e-5 * Math.Max(1, Math.Abs(want[i])), $"{key}[{i}]: {got[i]} against numpy {want[i]}");
        }
        Assert.False(Step(r, "arcc_complexity")["directions"]!["arcc"]!.GetValue<bool>());
        Assert.True(Step(r, "arcc")["directions"]!["arcc"]!.GetValue<bool>());
    }

    /// <summary>Maps outside [0, 1] are used as given with a warning; <c>scale: true</c> min-max scales them first (a
    /// map already spanning [0, 1], the one-hot input 2, scores the same either way; the signed noise of input 1 not).</summary>
    [Fact]
    public void WarnsOfMapsOutsideTheUnitRangeAndScalesThemOnRequest()
    {
        var r = Env.FixtureRun("""
              - { id: cc, uses: confidence-change, with: { of: m } }
              - { id: cc_scaled, uses: confidence-change, with: { of: m, scale: true } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        Assert.Contains(Step(r, "cc")["warnings"]!.AsArray(), w => w!.GetValue<string>().Contains("leave [0, 1]"));
        Assert.Null(Step(r, "cc_scaled")["warnings"]);
        var plain = Env.InputValues(r, "cc", "confidence_change");
        var scaled = Env.InputValues(r, "cc_scaled", "confidence_change");
        Assert.True(Math.Abs(plain[2] - scaled[2]) <= 1e-4, $"{plain[2]} vs {scaled[2]}");
        Assert.True(Math.Abs(plain[1] - scaled[1]) > 1e-2, $"{plain[1]} vs {scaled[1]}");
    }

    [Fact]
    public void RefusesPercentilesOutsideTheRangeOrRepeated()
    {
        var r = Env.FixtureRun("""
              - { id: a, uses: road-confidence, with: { of: m, percentiles: [10, 101] } }
              - { id: b, uses: road-confidence, with: { of: m, percentiles: [20, 20] } }
            """);
        Assert.NotEqual(0, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.Contains("step 'a'", all);
        Assert.Contains("must list values in [0, 100]", all);
        Assert.Contains("lists 20 twice", all);
    }
}
