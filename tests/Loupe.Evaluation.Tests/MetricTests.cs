using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;

namespace Loupe.Evaluation.Tests;

public class MetricTests
{
    /// <summary>8 region images (+ optionally one all-black image) as preprocessed .npy; returns its YAML path.</summary>
    static string RegionData(bool withBlank = false)
    {
        var px = RegionNet.Images(8, 3);
        int n = 8;
        if (withBlank) { px = [.. px, .. new float[784]]; n = 9; }
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(px, [n, 1, 28, 28])));
        return Env.Yaml(path);
    }

    static string RegionPipeline(string steps, bool withBlank = false) => $"""
        version: 1
        model: {"{"} uses: region-test {"}"}
        data:
          uses: npy
          with: {"{"} path: {RegionData(withBlank)} {"}"}
        settings: {"{"} batch_size: 4 {"}"}
        steps:
        {steps}
        """;

    static readonly Lazy<Loupe.Core.RunResult> Region = new(() =>
    {
        var r = Env.Run(RegionPipeline("""
              - { id: sal, uses: saliency }
              - { id: rnd, uses: random-map }
              - { id: sal-del, uses: deletion, with: { of: sal, steps: 64, expect: ["auc_mean < 0.1"] } }
              - { id: rnd-del, uses: deletion, with: { of: rnd, steps: 64 } }
              - { id: sal-ins, uses: insertion, with: { of: sal, steps: 64, baseline: black } }
              - { id: rnd-ins, uses: insertion, with: { of: rnd, steps: 64, baseline: black } }
              - { id: sal-patch, uses: deletion, with: { of: sal, steps: 16, patch: 4 } }
              - { id: sal-pg, uses: pointing-game, with: { of: sal, tolerance: 0 } }
              - { id: rnd-pg, uses: pointing-game, with: { of: rnd, tolerance: 0 } }
              - { id: rnd-fail, uses: deletion, with: { of: rnd, steps: 16, expect: ["auc_mean < 0.2", "auc_std >= 0"] } }
            """));
        return r;
    });

    [Fact]
    public void DeletionAndInsertionSeparateACorrectMapFromARandomOne()
    {
        var r = Region.Value;
        // Ideal: the probability collapses once 2/3 of the 64 region pixels (5% of the image) are gone. Chance: once
        // 2/3 of all pixels are gone (AUC ≈ 0.67).
        Assert.True(Env.Metric(r, "sal-del", "auc_mean") < 0.08, Env.Dump(r));
        Assert.InRange(Env.Metric(r, "rnd-del", "auc_mean"), 0.5, 0.85);
        Assert.True(Env.Metric(r, "sal-ins", "auc_mean") > 0.9);
        Assert.InRange(Env.Metric(r, "rnd-ins", "auc_mean"), 0.5, 0.85);
        Assert.True(Env.Metric(r, "sal-patch", "auc_mean") < 0.15);
        var curves = Npy.Read(Path.Combine(r.OutDir!, "sal-del", "curves.npy"));
        Assert.Equal(new long[] { 8, 65 }, curves.Shape);
        Assert.All(Enumerable.Range(0, 8), i => Assert.True(curves.Data[i * 65] > 0.99 && curves.Data[i * 65 + 64] < 0.01));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "sal-del", "curves.png")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "sal-del", "auc.json")));
        Assert.Contains("\"metric\"", File.ReadAllText(Path.Combine(r.OutDir!, "sal-del", "summary.json")));
    }

    [Fact]
    public void PointingGameHitsWithTheCorrectMapAndNotWithARandomOne()
    {
        var r = Region.Value;
        Assert.Equal(1.0, Env.Metric(r, "sal-pg", "hit_rate"));
        Assert.Equal(1.0, Env.Metric(r, "sal-pg", "energy_mean"), 1e-6);
        Assert.True(Env.Metric(r, "rnd-pg", "hit_rate") < 0.4);            // chance: 64 / 784 ≈ 0.08
        Assert.InRange(Env.Metric(r, "rnd-pg", "energy_mean"), 0.04, 0.14);
    }

    [Fact]
    public void AFailedExpectationFailsTheStepAfterItsOutputs()
    {
        var r = Region.Value;
        Assert.Equal(1, r.ExitCode);
        var steps = r.Manifest!["steps"]!.AsArray();
        Assert.All(steps.Where(s => s!["id"]!.GetValue<string>() != "rnd-fail"), s => Assert.Equal("succeeded", s!["status"]!.GetValue<string>()));
        var failed = steps.First(s => s!["id"]!.GetValue<string>() == "rnd-fail")!;
        Assert.Equal("failed", failed["status"]!.GetValue<string>());
        Assert.Contains("expectation(s) failed: auc_mean < 0.2 (auc_mean = 0.", failed["error"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "rnd-fail", "curves.npy")));
        Assert.True(failed["metrics"]!["auc_mean"]!.GetValue<double>() > 0.2);
    }

    [Fact]
    public void SanityRandomisationDecorrelatesModelDependentMapsButNotEdges()
    {
        var r = Env.Run($"""
            version: 1
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: {Env.DemoWeights} {"}"}
            data:
              uses: idx
              with: {"{"} images: {Env.DemoImages}, limit: 8 {"}"}
            steps:
              - {"{"} id: sal, uses: saliency {"}"}
              - {"{"} id: gc, uses: grad-cam, with: {"{"} layer: relu3 {"}"} {"}"}
              - {"{"} id: edges, uses: sobel-map {"}"}
              - {"{"} id: del-before, uses: deletion, with: {"{"} of: gc, steps: 10 {"}"} {"}"}
              - {"{"} id: sal-sanity, uses: sanity-randomisation, with: {"{"} of: sal, expect: ["spearman_full_mean < 0.5"] {"}"} {"}"}
              - {"{"} id: gc-sanity, uses: sanity-randomisation, with: {"{"} of: gc {"}"} {"}"}
              - {"{"} id: edges-sanity, uses: sanity-randomisation, with: {"{"} of: edges {"}"} {"}"}
              - {"{"} id: del-after, uses: deletion, with: {"{"} of: gc, steps: 10 {"}"} {"}"}
            """);
        Assert.True(r.ExitCode == 0, Env.Dump(r));
        Assert.True(Env.Metric(r, "sal-sanity", "spearman_full_mean") < 0.5);
        Assert.True(Env.Metric(r, "gc-sanity", "spearman_full_mean") < 0.5);
        Assert.Equal(0, Env.Metric(r, "gc-sanity", "insensitive"));
        Assert.True(Env.Metric(r, "edges-sanity", "spearman_full_mean") > 0.9);
        Assert.Equal(1, Env.Metric(r, "edges-sanity", "insensitive"));
        var edges = r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == "edges-sanity")!;
        Assert.Contains("barely change", edges["warnings"]!.ToJsonString());
        // The weights were restored: the same metric before and after the randomisation steps agrees. Not bit for bit:
        // the parameters the randomisation handed out keep their batch norms unfolded from then on (fold_batchnorm),
        // which moves results by float rounding (~1e-6 relative); weights left randomised move them by far more.
        double before = Env.Metric(r, "del-before", "auc_mean"), after = Env.Metric(r, "del-after", "auc_mean");
        Assert.True(Math.Abs(before - after) <= 1e-4 * Math.Abs(before), $"deletion AUC {before} before, {after} after");
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "gc-sanity", "randomisation.png")));
        var sp = Npy.Read(Path.Combine(r.OutDir!, "gc-sanity", "spearman.npy"));
        Assert.Equal(8, sp.Shape[0]);
    }

    [Fact]
    public void BadInputGivesClearValidationErrors()
    {
        var missing = Env.Run(RegionPipeline("""
              - { id: sal, uses: saliency }
              - { id: d, uses: deletion, with: { of: salency } }
            """));
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains(missing.Errors, e => e.Message.Contains("no other step with id 'salency'") && e.Message.Contains("steps: sal"));

        var notAttribution = Env.Run(RegionPipeline("""
              - { id: f, uses: filters, with: { layer: conv } }
              - { id: d, uses: insertion, with: { of: f } }
            """));
        Assert.Equal(2, notAttribution.ExitCode);
        Assert.Contains(notAttribution.Errors, e => e.Message.Contains("step 'f' is not an attribution method") && e.Message.Contains("step 'd' (insertion)"));

        var badExpect = Env.Run(RegionPipeline("""
              - { id: sal, uses: saliency }
              - { id: d, uses: deletion, with: { of: sal, expect: ["auc_mean < low", "auc_men < 0.2", "auc_mean ~ 1"] } }
            """));
        Assert.Equal(2, badExpect.ExitCode);
        Assert.Contains(badExpect.Errors, e => e.Message.Contains("'expect'[0] \"auc_mean < low\": at character 12: expected a number"));
        Assert.Contains(badExpect.Errors, e => e.Message.Contains("'expect'[1]") && e.Message.Contains("unknown metric 'auc_men'") && e.Message.Contains("did you mean 'auc_mean'"));
        Assert.Contains(badExpect.Errors, e => e.Message.Contains("'expect'[2]") && e.Message.Contains("at character 10: expected a comparison"));

        var noOf = Env.Run(RegionPipeline("""
              - { id: d, uses: pointing-game }
            """));
        Assert.Equal(2, noOf.ExitCode);
        Assert.Contains(noOf.Errors, e => e.Message.Contains("step 'd' (pointing-game): option 'of' is required"));
    }

    [Fact]
    public void AnAllBackgroundImageIsSkippedWithAWarning()
    {
        var r = Env.Run(RegionPipeline("""
              - { id: sal, uses: saliency }
              - { id: pg, uses: pointing-game, with: { of: sal, tolerance: 0 } }
            """, withBlank: true));
        Assert.True(r.ExitCode == 0, Env.Dump(r));
        var pg = r.Manifest!["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == "pg")!;
        Assert.Contains("1 input(s) have no object pixels", pg["warnings"]!.ToJsonString());
        Assert.Contains("00008", pg["warnings"]!.ToJsonString());
        Assert.Equal(1.0, Env.Metric(r, "pg", "hit_rate"));
        Assert.Equal(1.0, Env.Metric(r, "pg", "skipped"));
    }

    [Fact]
    public void InfidelityAndSensitivityAreZeroForTheExactGradientOfALinearModel()
    {
        // In its region the model is linear (relu of positive pixels): the signed gradient explains every perturbation
        // exactly (IᵀΦ = f(x) − f(x − I)) and does not change under small perturbations.
        var r = Env.Run(RegionPipeline("""
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rnd, uses: random-map }
              - { id: sal-inf, uses: infidelity, with: { of: sal, samples: 16, sigma: 0.05, expect: ["infidelity_mean < 1e-6"] } }
              - { id: rnd-inf, uses: infidelity, with: { of: rnd, samples: 16, sigma: 0.05 } }
              - { id: sal-sens, uses: sensitivity-max, with: { of: sal, samples: 4 } }
              - { id: rnd-sens, uses: sensitivity-max, with: { of: rnd, samples: 4 } }
            """));
        Assert.True(r.ExitCode == 0, Env.Dump(r));
        Assert.True(Env.Metric(r, "sal-inf", "infidelity_mean") < 1e-6);
        Assert.True(Env.Metric(r, "rnd-inf", "infidelity_mean") > 1e-2);
        Assert.True(Env.Metric(r, "sal-sens", "sensitivity_mean") < 1e-6);
        Assert.InRange(Env.Metric(r, "rnd-sens", "sensitivity_mean"), 0.5, 1.0);   // independent U[0,1] maps: ≈ √½
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "rnd-sens", "sensitivity.json")));
    }

    [Theory]
    [InlineData("auc_mean < 0.2", "auc_mean", "<", 0.2)]
    [InlineData("  auc_std>=1e-3 ", "auc_std", ">=", 1e-3)]
    [InlineData("auc_mean != -1", "auc_mean", "!=", -1)]
    // The step-level grammar (one for both): a prefix and the _mean of a name resolve as in a step's expect: lines.
    [InlineData("deletion.auc <= .5", "auc_mean", "<=", 0.5)]
    [InlineData("auc_std == +2E1", "auc_std", "==", 20)]
    public void ExpectationsParse(string text, string metric, string op, double value)
    {
        var e = Expectation.Parse(text, 0, ["auc_mean", "auc_std"], out var err);
        Assert.Null(err);
        Assert.Equal((metric, op, value), (e!.Line.Key(new[] { "auc_mean", "auc_std" }.Contains), e.Line.Op, e.Line.Value));
        var line = Expectation.Parse("auc_mean < 1", 0, ["auc_mean"], out _)!;
        Assert.Null(line.Check(new Dictionary<string, double> { ["auc_mean"] = 0.5 }));
        Assert.Contains("auc_mean = 1", line.Check(new Dictionary<string, double> { ["auc_mean"] = 1 }));
        Assert.NotNull(line.Check(new Dictionary<string, double> { ["auc_mean"] = double.NaN }));
        Assert.Contains("was not computed", line.Check(new Dictionary<string, double>()));
    }

    [Theory]
    [InlineData("auc_mean < 0.2 x", 16, "unexpected 'x'")]
    [InlineData("< 0.2", 1, "expected a metric name (e.g. auc_mean)")]
    [InlineData("auc_mean 0.2", 10, "expected a comparison")]
    [InlineData("auc_mean < nan", 12, "expected a number")]
    [InlineData("auc_mean < 1e999", 12, "expected a number")]
    [InlineData("deletion.auc_men < 1", 1, "unknown metric 'deletion.auc_men' (did you mean 'auc_mean'?)")]
    public void ExpectationErrorsNameTheCharacter(string text, int position, string message)
    {
        Assert.Null(Expectation.Parse(text, 3, ["auc_mean", "auc_std"], out var err));
        Assert.Contains($"option 'expect'[3] \"{text}\": at character {position}: {message}", err);
    }

    [Fact]
    public void PointingGameOnPlacedItemsFindsTheEdgesOfTheItem()
    {
        // The Sobel map peaks on the item's outline: within 2 px of its mask on every canvas, wherever the item lies.
        // (The demo CNN itself was trained on centred 28² items: on the 56² canvas it predicts 'sneaker' for nearly
        // everything, so its maps are not expected to point at the item.)
        var r = Env.Run($"""
            version: 1
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: {Env.DemoWeights} {"}"}
              input: {"{"} size: [56, 56] {"}"}
            data:
              uses: fashion-placement
              with: {"{"} images: {Env.DemoImages}, limit: 16, canvas: 56, seed: 1 {"}"}
            steps:
              - {"{"} id: edges, uses: sobel-map {"}"}
              - {"{"} id: sal, uses: saliency {"}"}
              - {"{"} id: pg, uses: pointing-game, with: {"{"} of: edges, tolerance: 2, expect: ["hit_rate == 1"] {"}"} {"}"}
              - {"{"} id: pg-sal, uses: pointing-game, with: {"{"} of: sal {"}"} {"}"}
            """);
        Assert.True(r.ExitCode == 0, Env.Dump(r));
        Assert.Equal(0, Env.Metric(r, "pg", "skipped"));
        Assert.True(Env.Metric(r, "pg", "energy_mean") > 0.3);
        Assert.InRange(Env.Metric(r, "pg-sal", "hit_rate"), 0, 1);
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "pg", "pointing.json")));
    }

    [Fact]
    public void PlacementPastesEachItemInsideItsBox()
    {
        var src = new FashionPlacement().Open(new PlacementOptions { Images = Path.Combine(Env.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"), Canvas = 56, Limit = 5, Seed = 4 },
            new DataOpenContext(Env.Samples, new InputSpec(1, 56, 56, [0f], [1f])));
        var positions = new HashSet<(int, int)>();
        int count = 0;
        foreach (var b in src.Read(new InputSpec(1, 56, 56, [0f], [1f]), 2, default))
            using (b)
            {
                Assert.Equal(new long[] { b.Ids.Length, 1, 56, 56 }, b.Pixels.shape);
                for (int i = 0; i < b.Ids.Length; i++)
                {
                    var (y0, x0) = FashionPlacement.Position(4, count, 56, 28, 28);
                    positions.Add((y0, x0));
                    var px = b.Pixels[i, 0].contiguous().ToArray<float>();
                    for (int y = 0; y < 56; y++)
                        for (int x = 0; x < 56; x++)
                            if (px[y * 56 + x] > 0) Assert.True(y >= y0 && y < y0 + 28 && x >= x0 && x < x0 + 28);
                    Assert.True(px.Sum() > 10);
                    count++;
                }
            }
        Assert.Equal(5, count);
        Assert.True(positions.Count > 1);
    }

    /// <summary>The ranks of float32 values (sorted as packed 64-bit words) equal the ranks of the same values as float64
    /// (ties averaged, −0 tied with +0, negatives), and a non-finite value takes the float64 path.</summary>
    [Fact]
    public void FloatRanksEqualTheFloat64Ranks()
    {
        var random = new Random(3);
        var v = Enumerable.Range(0, 5000).Select(_ => (float)Math.Round(random.NextDouble() * 40 - 20) / 4).ToArray();   // many ties
        v[7] = -0f; v[8] = 0f; v[9] = float.Epsilon; v[10] = -float.Epsilon; v[11] = float.MaxValue; v[12] = float.MinValue;
        Assert.Equal(Maps.Ranks(Array.ConvertAll(v, x => (double)x)), Maps.Ranks(v));
        v[3] = float.NaN;
        Assert.Equal(Maps.Ranks(Array.ConvertAll(v, x => (double)x)), Maps.Ranks(v));
    }
}
