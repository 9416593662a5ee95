using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>The Quantus-style metrics (issue 22) against numpy implementations of their published formulas
/// (tests/fixtures/make_quality_fixtures.py) and on the region CNN, whose right map is known.</summary>
public partial class QualityTests
{
    static string Fixture(string name) => Env.QualityFixture(name);

    static double[] Values(Loupe.Core.RunResult r, string step, string key) => Env.InputValues(r, step, key);

    static Loupe.Core.RunResult FixtureRun(string steps, int? batchSize = null) => Env.FixtureRun(steps, batchSize);

    /// <summary>Whether pixel p of a 28×28 image lies in the region CNN's region R.</summary>
    internal static bool InRegion(int p) => p / 28 is >= RegionNet.Lo and < RegionNet.Hi && p % 28 is >= RegionNet.Lo and < RegionNet.Hi;

    /// <summary>The region CNN's logit of class 0, z = 20·mean_R(relu x) − 5, of an image given pixel by pixel.</summary>
    static double RegionLogit(Func<int, double> pixel)
    {
        double sum = 0;
        for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
            for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) sum += Math.Max(0, pixel(y * 28 + x));
        return 20 * sum / ((RegionNet.Hi - RegionNet.Lo) * (RegionNet.Hi - RegionNet.Lo)) - 5;
    }

    static readonly Lazy<Loupe.Core.RunResult> Fixed = new(() => Env.Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
        settings: { batch_size: 4 }
        steps:
          - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
          - { id: sparseness, uses: sparseness, with: { of: m } }
          - { id: complexity, uses: complexity, with: { of: m } }
          - { id: effective_complexity, uses: effective-complexity, with: { of: m } }
          - { id: attribution_localisation, uses: attribution-localisation, with: { of: m } }
          - { id: top_k_intersection, uses: top-k-intersection, with: { of: m, k: 100 } }
          - { id: top_k_intersection_concept, uses: top-k-intersection, with: { of: m, k: 100, concept_influence: true } }
          - { id: attribution_localisation_signed, uses: attribution-localisation, with: { of: m, abs: false, positive_only: false } }
          - { id: relevance_rank_accuracy, uses: relevance-rank-accuracy, with: { of: m } }
          - { id: relevance_mass_accuracy, uses: relevance-mass-accuracy, with: { of: m } }
          - { id: auc, uses: auc, with: { of: m } }
          - { id: completeness, uses: completeness, with: { of: m } }
          - { id: completeness_white, uses: completeness, with: { of: m, baseline: max } }
          - { id: completeness_normalised, uses: completeness, with: { of: m, normalise: true } }
          - { id: non_sensitivity_signed, uses: non-sensitivity, with: { of: m, abs: false } }
          - { id: non_sensitivity, uses: non-sensitivity, with: { of: m } }
          - { id: non_sensitivity_fis4, uses: non-sensitivity, with: { of: m, features_in_step: 4, softmax: false } }
          - { id: faithfulness_estimate, uses: faithfulness-estimate, with: { of: m } }
          - { id: faithfulness_estimate_constant, uses: faithfulness-estimate, with: { of: m, baseline: 0.3 } }
          - { id: faithfulness_estimate_kendall, uses: faithfulness-estimate, with: { of: m, similarity: kendall } }
          - { id: monotonicity_correlation_pearson, uses: monotonicity-correlation, with: { of: m, features_in_step: 16, runs: 2, baseline: min, softmax: false, similarity: pearson } }
          - { id: monotonicity, uses: monotonicity, with: { of: m, features_in_step: 16 } }
          - { id: monotonicity_correlation, uses: monotonicity-correlation, with: { of: m, features_in_step: 16, runs: 2, baseline: min, softmax: false } }
          - { id: pixel_flipping, uses: pixel-flipping, with: { of: m, features_in_step: 16 } }
          - { id: selectivity, uses: selectivity, with: { of: m, patch: 4 } }
          - { id: selectivity_sliding, uses: selectivity, with: { of: m, patch: 4, windows: sliding } }
          - { id: region_perturbation_morf, uses: region-perturbation, with: { of: m, patch: 4, regions: 20, baseline: min } }
          - { id: region_perturbation_lerf, uses: region-perturbation, with: { of: m, patch: 4, regions: 20, baseline: min, order: lerf } }
          - { id: region_perturbation_morf_sliding, uses: region-perturbation, with: { of: m, patch: 4, regions: 20, baseline: min, windows: sliding } }
          - { id: region_perturbation_lerf_sliding, uses: region-perturbation, with: { of: m, patch: 4, regions: 20, baseline: min, order: lerf, windows: sliding } }
          - { id: fc, uses: faithfulness-correlation, with: { of: m, runs: 20, subset_size: 100 } }
          - { id: infidelity_blocks, uses: infidelity, with: { of: m, perturbation: blocks } }
          - { id: infidelity_blocks_sides, uses: infidelity, with: { of: m, perturbation: blocks, patch_sizes: [3, 7], softmax: true, normalise: true, baseline: 0.25, micro_batch: 7 } }
          - { id: sn, uses: sensitivity-n, with: { of: m, runs: 10, fractions: [0.05, 0.2] } }
        """));

    /// <summary>The errors of a run's failed steps (short, unlike the whole manifest).</summary>
    internal static string Failures(Loupe.Core.RunResult r) => string.Join("\n", r.Errors) + string.Join("\n",
        r.Manifest?["steps"]?.AsArray().Where(s => (string?)s!["status"] != "succeeded").Select(s => $"{s!["id"]}: {((string?)s["error"])?.Split('\n')[0]}") ?? []);

    [Fact]
    public void PointingGameTakesQuantussTiesSignAndWeights()
    {
        // Two inputs whose object mask is the region R (the only bright pixels). Input 0's map ties its maximum 5 at
        // pixel (0, 0), outside R and first in raster order, and inside R; input 1's maximum 3 is inside R, with −9 at
        // (27, 27). ties first: miss, hit; any (Quantus): hit, hit; weighted: a hit scores 1 − |R|/784; abs true: |−9|
        // wins on input 1, outside R.
        var images = new float[2 * 784];
        var maps = new float[2 * 784];
        int inside = RegionNet.Lo * 28 + RegionNet.Lo + 1;
        for (int i = 0; i < 2; i++)
            for (int p = 0; p < 784; p++)
                if (InRegion(p)) images[i * 784 + p] = 0.8f;
        maps[0] = 5; maps[inside] = 5; maps[784 + inside] = 3; maps[784 + 783] = -9;
        var dir = Env.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "x.npy"), Npy.Encode(new NdArray(images, [2, 1, 28, 28])));
        File.WriteAllBytes(Path.Combine(dir, "m.npy"), Npy.Encode(new NdArray(maps, [2, 28, 28])));
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(dir, "x.npy"))}} } }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(Path.Combine(dir, "m.npy"))}} } }
              - { id: first, uses: pointing-game, with: { of: m, tolerance: 0 } }
              - { id: any, uses: pointing-game, with: { of: m, tolerance: 0, ties: any } }
              - { id: weighted, uses: pointing-game, with: { of: m, tolerance: 0, ties: any, weighted: true } }
              - { id: abs, uses: pointing-game, with: { of: m, tolerance: 0, ties: any, abs: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        double area = (RegionNet.Hi - RegionNet.Lo) * (RegionNet.Hi - RegionNet.Lo) / 784.0;
        Assert.Equal(0.5, Env.Metric(r, "first", "hit_rate"), 1e-12);
        Assert.Equal(1.0, Env.Metric(r, "any", "hit_rate"), 1e-12);
        Assert.Equal(1 - area, Env.Metric(r, "weighted", "hit_rate"), 1e-12);
        Assert.Equal(0.5, Env.Metric(r, "abs", "hit_rate"), 1e-12);
    }

    [Fact]
    public void SignedAttributionLocalisationLeavesOutRatiosAboveOne()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        // Quantus (positive_attributions false): Σ_mask a / (Σ a + 1e-9), NaN above 1; positive only: Σ_mask a⁺ / Σ a⁺.
        var a = TorchSharp.torch.tensor(new double[] { 2, -1.5, 0.2, 0.5, -0.1, 0.4 }).view(2, 3);
        var s = TorchSharp.torch.tensor(new[] { true, false, false, true, false, false }).view(2, 3);
        var signed = Loupe.Analysis.Evaluation.QualityFormulas.AttributionLocalisation(a, s, false, positiveOnly: false).data<double>().ToArray();
        Assert.True(double.IsNaN(signed[0]));                                    // 2 / 0.7 > 1
        Assert.Equal(0.5 / (0.8 + 1e-9), signed[1], 1e-12);
        var positive = Loupe.Analysis.Evaluation.QualityFormulas.AttributionLocalisation(a, s, false).data<double>().ToArray();
        Assert.Equal(2 / (2.2 + 1e-9), positive[0], 1e-12);
        Assert.Equal(0.5 / (0.9 + 1e-9), positive[1], 1e-12);
    }

    [Fact]
    public void StepsRankFeaturesAsTorchsStableDescendingSort()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        // Many ties (values rounded to tenths, zeros of both signs), a NaN, and both directions; features_in_step 3.
        TorchSharp.torch.manual_seed(5);
        var a = (TorchSharp.torch.randn(4, 60, dtype: TorchSharp.torch.ScalarType.Float64) * 3).round() / 10;
        a[0, 7] = TorchSharp.torch.tensor(double.NaN, dtype: TorchSharp.torch.ScalarType.Float64);
        a[1, 3] = TorchSharp.torch.tensor(-0.0, dtype: TorchSharp.torch.ScalarType.Float64);
        foreach (var descending in new[] { true, false })
        {
            var v = descending ? a : -a;
            var order = v.sort(1, descending: true, stable: true).Indices;
            var want = TorchSharp.torch.zeros_like(order).scatter_(1, order, TorchSharp.torch.arange(60L).expand(4, 60).contiguous()).div(3, rounding_mode: TorchSharp.torch.RoundingMode.floor);
            var got = Loupe.Analysis.Evaluation.QualityFormulas.Steps(a, descending, 3, 1, 6, 10, out long steps);
            Assert.Equal(20, steps);
            Assert.Equal(want.data<long>().ToArray(), got.data<long>().ToArray());
        }
        // A map of 224×224: infinities, NaNs, zeros of both signs, subnormals and many ties among 50,176 values.
        var big = (TorchSharp.torch.randn(2, 50176, dtype: TorchSharp.torch.ScalarType.Float64) * 50).round() / 10;
        foreach (var (at, value) in new[] { (5, double.PositiveInfinity), (9, double.NegativeInfinity), (11, double.NaN), (40000, double.NaN), (13, -0.0), (14, 0.0), (15, double.Epsilon), (16, -double.Epsilon), (17, double.MaxValue) })
            big[1, at] = TorchSharp.torch.tensor(value, dtype: TorchSharp.torch.ScalarType.Float64);
        foreach (var descending in new[] { true, false })
        {
            var order = (descending ? big : -big).sort(1, descending: true, stable: true).Indices;
            var want = TorchSharp.torch.zeros_like(order).scatter_(1, order, TorchSharp.torch.arange(50176L).expand(2, 50176).contiguous());
            var got = Loupe.Analysis.Evaluation.QualityFormulas.Steps(big, descending, 1, 1, 224, 224, out long steps);
            Assert.Equal(50176, steps);
            Assert.Equal(want.data<long>().ToArray(), got.data<long>().ToArray());
        }
    }

    [Fact]
    public void GridRegionsAreQuantusBlocksOfTheEvenlyPaddedMap()
    {
        // tests/fixtures/make_quality_fixtures.py restates Quantus 0.6's blocks on a 7×10 map with ties, patch 4 (one
        // padding row at the bottom, a column on each side), MoRF and LeRF.
        using var scope = TorchSharp.torch.NewDisposeScope();
        var fixture = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "grid.json")))!.AsObject();
        var a = TorchSharp.torch.tensor(fixture["map"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray(), [1, 70]);
        foreach (var (name, descending) in new[] { ("morf", true), ("lerf", false) })
        {
            var got = Loupe.Analysis.Evaluation.QualityFormulas.Steps(a, descending, 1, 4, 7, 10, out long steps);
            Assert.Equal(fixture[name]!["count"]!.GetValue<long>(), steps);
            Assert.Equal(fixture[name]!["steps"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray(), got.data<long>().ToArray());
        }
    }

    [Fact]
    public void SlidingRegionsAreQuantusGreedyWindows()
    {
        // tests/fixtures/make_quality_fixtures.py restates Quantus's padded loop (RegionPerturbation, Selectivity) on a 7×9
        // map with ties, patch 3 (windows past the bottom and right edges), MoRF and LeRF, every region and at most 4.
        using var scope = TorchSharp.torch.NewDisposeScope();
        var fixture = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "sliding.json")))!.AsObject();
        var map = fixture["map"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        var a = TorchSharp.torch.tensor(map.Concat(map.Select(v => -v)).ToArray(), [2, 63]);   // row 1: the reversed ranking
        foreach (var (name, descending) in new[] { ("morf", true), ("lerf", false) })
            foreach (var limit in new long?[] { null, 4 })
            {
                var want = fixture[$"{name}_{(limit is null ? "all" : "4")}"]!;
                var got = Loupe.Analysis.Evaluation.QualityFormulas.SlidingSteps(a, descending, 3, 7, 9, limit ?? long.MaxValue, out var counts);
                Assert.Equal(want["count"]!.GetValue<long>(), counts[0]);
                Assert.Equal(want["steps"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray(),
                    got[0].data<long>().ToArray().Select(v => v == long.MaxValue ? -1 : v).ToArray());
                // Every region is one window's in-image part: a rectangle of at most 3×3 pixels.
                var steps = got[1].data<long>().ToArray();
                for (long k = 0; k < counts[1]; k++)
                {
                    var pixels = Enumerable.Range(0, 63).Where(i => steps[i] == k).ToArray();
                    int r0 = pixels.Min(i => i / 9), r1 = pixels.Max(i => i / 9), c0 = pixels.Min(i => i % 9), c1 = pixels.Max(i => i % 9);
                    Assert.True(r1 - r0 < 3 && c1 - c0 < 3 && pixels.Length == (r1 - r0 + 1) * (c1 - c0 + 1), $"{name}: region {k} is not a window");
                }
            }
    }

    [Fact]
    public void EveryMetricMatchesTheNumpyReferenceOnFixedMaps()
    {
        var r = Fixed.Value;
        Assert.True(r.ExitCode == 0, Failures(r));
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected.json")))!.AsObject();
        Assert.Equal(31, expected.Count);
        foreach (var (step, values) in expected)
        {
            var key = step.StartsWith("region_perturbation") ? "region_perturbation" : step.StartsWith("non_sensitivity") ? "non_sensitivity"
                : step.StartsWith("selectivity") ? "selectivity" : step.StartsWith("completeness") ? "completeness"
                : step.StartsWith("faithfulness_estimate") ? "faithfulness_estimate" : step.StartsWith("infidelity") ? "infidelity"
                : step.StartsWith("monotonicity_correlation") ? "monotonicity_correlation"
                : step.StartsWith("top_k_intersection") ? "top_k_intersection" : step.StartsWith("attribution_localisation") ? "attribution_localisation" : step;
            var got = Values(r, step, key);
            var want = values!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
            Assert.Equal(want.Length, got.Length);
            for (int i = 0; i < want.Length; i++)
                Assert.True(Math.Abs(got[i] - want[i]) <= 1e-4 + 1e-4 * Math.Abs(want[i]), $"{step}[{i}]: {got[i]} against numpy {want[i]}");
        }
    }

    [Fact]
    public void RemovalCurvesAreQuantusCurves()
    {
        // Quantus returns these curves per input: selectivity's f(x_k), k = 1..K (with Quantus 0.5's sliding windows K
        // differs between inputs: NaN after it), region perturbation's f(x) − f(x_k), k = 1..20 (Loupe's rows start at k = 0).
        var r = Fixed.Value;
        Assert.True(r.ExitCode == 0, Failures(r));
        var curves = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "curves.json")))!.AsObject();
        double[][] Rows(string key) => curves[key]!.AsArray().Select(c => c!.AsArray().Select(v => v!.GetValue<double>()).ToArray()).ToArray();
        foreach (var step in new[] { "selectivity", "selectivity_sliding" })
        {
            var selectivity = Loupe.Testing.HostRuns.Artifact(r, $"{step}/selectivity_curve.npy");
            long ws = selectivity.Shape[1];
            foreach (var (i, want) in Rows(step).Select((c, i) => (i, c)))
                for (int k = 0; k < ws; k++)
                    if (k < want.Length) Assert.True(Math.Abs(selectivity.Data[i * ws + k] - want[k]) < 1e-5, $"{step}[{i}, {k}]: {selectivity.Data[i * ws + k]} against {want[k]}");
                    else Assert.True(float.IsNaN(selectivity.Data[i * ws + k]), $"{step}[{i}, {k}] past the input's {want.Length} regions");
        }
        Assert.Contains(Rows("selectivity_sliding"), c => c.Length < 49);   // the ragged case is exercised
        var rp = Loupe.Testing.HostRuns.Artifact(r, "region_perturbation_morf/region_perturbation_curve.npy");
        long wr = rp.Shape[1];
        Assert.Equal(21, wr);
        foreach (var (i, want) in Rows("region_perturbation_morf").Select((c, i) => (i, c)))
            for (int k = 0; k < want.Length; k++)
            {
                double drop = rp.Data[i * wr] - rp.Data[i * wr + k + 1];
                Assert.True(Math.Abs(drop - want[k]) < 1e-5, $"region perturbation[{i}, {k + 1}]: {drop} against {want[k]}");
            }
        // The JSON's per-point means are over the inputs that reach the point.
        var info = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "selectivity_sliding", "selectivity_curve.json")))!;
        var last = Rows("selectivity_sliding").Where(c => c.Length == 49).Select(c => c[48]).Average();
        Assert.Equal(last, info["mean"]![48]!.GetValue<double>(), 1e-5);
    }

    [Fact]
    public void ClosedFormsHold()
    {
        var r = Fixed.Value;
        // Map 2 is one-hot: sparseness (D − 1)/D up to Quantus's +1e-7, one effective feature, zero entropy.
        Assert.InRange(Values(r, "sparseness", "sparseness")[2], 783.0 / 784 - 1e-3, 783.0 / 784);
        Assert.Equal(1, Values(r, "effective_complexity", "effective_complexity")[2]);
        Assert.True(Math.Abs(Values(r, "complexity", "complexity")[2]) < 1e-9);
        // Map 0 is gradient × input of a model that is linear on its region: complete, and every random subset's
        // attribution sum is proportional to its output drop (correlation 1).
        Assert.True(Values(r, "completeness", "completeness")[0] < 1e-5);
        Assert.True(Values(r, "fc", "faithfulness_correlation")[0] > 1 - 1e-6);
        Assert.True(Math.Abs(Values(r, "fc", "faithfulness_correlation")[1]) < 0.8);
        Assert.True(Values(r, "sn", "sensitivity_n")[0] > 1 - 1e-6);
        Assert.True(Values(r, "sn", "sensitivity_n")[1] < 0.8);
        var summary = File.ReadAllText(Path.Combine(r.OutDir!, "sparseness", "summary.json"));
        Assert.Contains("\"higherIsBetter\":true", summary.Replace(" ", ""));
        Assert.Contains("\"higher_is_better\": false", File.ReadAllText(Path.Combine(r.OutDir!, "region_perturbation_lerf", "region_perturbation.json")));
    }

    [Fact]
    public void OnTheRegionCnnTheCorrectMapBeatsARandomOne()
    {
        var px = RegionNet.Images(8, 5);
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(px, [8, 1, 28, 28])));
        string[] ids = ["attribution-localisation", "top-k-intersection", "relevance-rank-accuracy", "relevance-mass-accuracy", "auc",
            "faithfulness-correlation", "faithfulness-estimate", "pixel-flipping", "selectivity", "region-perturbation", "irof", "road"];
        string With(string id) => id switch
        {
            "top-k-intersection" => ", k: 64", "faithfulness-correlation" => ", runs: 30, subset_size: 64",
            "pixel-flipping" => ", features_in_step: 8", "selectivity" => ", patch: 4", "region-perturbation" => ", patch: 4, regions: 16",
            "irof" => ", segments: 30", "road" => ", percentages: [10, 30, 50, 70, 90]",
            _ => "",
        };
        var steps = string.Join("\n", ids.SelectMany(id => new[] { "sal", "rnd" }.Select(m => $"  - {{ id: {m}-{id}, uses: {id}, with: {{ of: {m}{With(id)} }} }}")));
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(path)}} } }
            settings: { batch_size: 4 }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rnd, uses: random-map }
            {{steps}}
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var id in ids)
        {
            var key = id.Replace('-', '_') + "_mean";
            double sal = Env.Metric(r, $"sal-{id}", key), rnd = Env.Metric(r, $"rnd-{id}", key);
            bool up = id is not ("pixel-flipping" or "selectivity" or "road");
            Assert.True(up ? sal > rnd : sal < rnd, $"{id}: saliency {sal}, random {rnd}");
        }
        // The methods × metrics table: both methods, every metric with its direction, saliency ranked first everywhere.
        var table = r.Manifest!["methodsTable"]!;
        Assert.Equal(["sal", "rnd"], table["methods"]!.AsArray().Select(m => m!.GetValue<string>()));
        var cols = table["metrics"]!.AsArray().ToDictionary(c => c!["name"]!.GetValue<string>(), c => c!["higherIsBetter"]!.GetValue<bool>());
        Assert.Equal(ids.ToHashSet(), cols.Keys.ToHashSet());
        Assert.False(cols["pixel-flipping"]);
        Assert.True(cols["auc"]);
        Assert.Equal(1.0, table["meanRank"]![0]!.GetValue<double>());
        Assert.Equal(2.0, table["meanRank"]![1]!.GetValue<double>());
        var csv = File.ReadAllLines(Path.Combine(r.OutDir!, "metrics.csv"));
        Assert.Contains(csv, l => l.StartsWith("sal-selectivity,selectivity,sal,selectivity_mean,") && l.EndsWith(",false"));
        Assert.Contains(csv, l => l.StartsWith("rnd-auc,auc,rnd,auc_std,") && l.EndsWith(",true"));
        var html = File.ReadAllText(Loupe.Core.Report.HtmlReport.Write(r.OutDir!));
        Assert.Contains("Methods × metrics", html);
        Assert.Contains("pixel-flipping ↓", html);
        Assert.Contains("aria-label=\"mean rank per method\"", html);
        // Per-metric ranks: saliency is first on every metric, the random map second.
        var rank = table["rank"]!.AsArray();
        Assert.All(rank[0]!.AsArray(), r => Assert.Equal(1.0, r!.GetValue<double>()));
        Assert.All(rank[1]!.AsArray(), r => Assert.Equal(2.0, r!.GetValue<double>()));
        Assert.Contains("aria-label=\"rank of each method per metric\"", html);
        Assert.Contains("road ↓", html);
    }

    [Fact]
    public void The_pointing_game_s_table_columns_are_its_hit_rate_and_its_energy()
    {
        // The table showed the energy share alone under 'pointing-game', read as the hit rate it is not; the cascading
        // randomisation had no column (its end points are lower-is-better similarities).
        var r = FixtureRun("""
              - { id: pg, uses: pointing-game, with: { of: m } }
              - { id: sp, uses: sparseness, with: { of: m } }
              - { id: g, uses: saliency }
              - { id: sr, uses: sanity-randomisation, with: { of: g } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var table = r.Manifest!["methodsTable"]!;
        var cols = table["metrics"]!.AsArray().Select(c => (c!["name"]!.GetValue<string>(), c!["higherIsBetter"]!.GetValue<bool>())).ToList();
        Assert.Equal([("pointing-game.hit_rate", true), ("pointing-game.energy", true), ("sparseness", true),
            ("sanity-randomisation.spearman_full", false), ("sanity-randomisation.ssim_full", false)], cols);
        Assert.Equal(["m", "g"], table["methods"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(Env.Metric(r, "sr", "spearman_full_mean"), table["mean"]![1]![3]!.GetValue<double>());
        Assert.Equal(Env.Metric(r, "pg", "hit_rate"), table["mean"]![0]![0]!.GetValue<double>());
        Assert.Null(table["std"]![0]![0]);
        Assert.Equal(Env.Metric(r, "pg", "energy_mean"), table["mean"]![0]![1]!.GetValue<double>());
        var csv = File.ReadAllLines(Path.Combine(r.OutDir!, "metrics.csv"));
        Assert.Contains(csv, l => l.StartsWith("pg,pointing-game,m,hit_rate,") && l.EndsWith(",true"));
        Assert.Contains(csv, l => l.StartsWith("pg,pointing-game,m,skipped,") && l.EndsWith(","));
    }

    /// <summary>Quantus 0.6's ROAD returns the accuracies of the first batch it is given: quantus_batch_size q scores the
    /// data's first q inputs, the same values as without it, and leaves the rest out of every mean — in a batch that
    /// straddles q (q = 3, batches of 2) and one wholly past it (q = 2).</summary>
    [Fact]
    public void RoadScoresOnlyQuantusFirstBatch()
    {
        var r = FixtureRun("""
              - { id: all, uses: road, with: { of: m, noise: 0 } }
              - { id: q3, uses: road, with: { of: m, noise: 0, quantus_batch_size: 3 } }
              - { id: q2, uses: road, with: { of: m, noise: 0, quantus_batch_size: 2 } }
            """, batchSize: 2);
        Assert.True(r.ExitCode == 0, Failures(r));
        var all = Values(r, "all", "road");
        Assert.Equal(4, all.Length);
        foreach (var (step, q) in new[] { ("q3", 3), ("q2", 2) })
        {
            var v = Values(r, step, "road");
            for (int i = 0; i < 4; i++)
                if (i < q) Assert.Equal(all[i], v[i], 12);
                else Assert.True(double.IsNaN(v[i]), $"{step}[{i}] = {v[i]}: past the first {q} inputs");
            Assert.Equal(all.Take(q).Average(), Env.Metric(r, step, "road_mean"), 12);
        }
        Assert.NotEqual(all.Take(2).Average(), all.Average());   // the left-out inputs would have moved the mean
    }

    [Fact]
    public void AMisspeltMetricInExpectFailsValidationWithASuggestion()
    {
        var r = FixtureRun("""
              - { id: s, uses: sparseness, with: { of: m, expect: ["sparsenes_mean > 0.5"] } }
              - { id: t, uses: pixel-flipping, with: { of: m }, expect: ["pixel-flipping.pixel_fliping < 0.5", "pixel_flipping < 0.5"] }
              - { id: u, uses: relative-representation-stability, with: { of: m } }
              - { id: v, uses: relative-input-stability, with: { of: m, lower_bound: 0.3 } }
              - { id: w, uses: road, with: { of: m, percentages: [10, 50, 10] } }
              - { id: x, uses: road, with: { of: m, percentages: [10, 150] } }
              - { id: y, uses: road, with: { of: m, percentages: [10, 50], expect: ["road_p50_mean < 0.5", "road_p30_mean < 0.5"] } }
              - { id: z, uses: pixel-flipping, with: { of: m, baseline: [0.1, 0.2] } }
              - { id: z2, uses: continuity, with: { of: m, baseline: [0.1, 0.2, 0.3] } }
              - { id: z3, uses: road, with: { of: m, order: random } }
              - { id: z4, uses: region-perturbation, with: { of: m, order: random, windows: sliding } }
            """);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'v'") && e.Message.Contains("'lower_bound' (0.3) must be below 'radius' (0.2)"));
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'w'") && e.Message.Contains("lists 10 twice"));
        // A constant fill needs one value or one per channel (the region CNN has one).
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'z'") && e.Message.Contains("option 'baseline': give one value or one per channel (1), got 2"));
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'z2'") && e.Message.Contains("option 'baseline': give one value or one per channel (1), got 3"));
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'z3'") && e.Message.Contains("road takes morf or lerf"));
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'z4'") && e.Message.Contains("random takes the grid's regions"));
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'x'") && e.Message.Contains("must list values in [0, 100]"));
        // ROAD's per-percentage series are known to expect: p50 passes validation, p30 (not a percentage) does not.
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown metric 'road_p30_mean'") && e.Message.Contains("road_p50_mean"));
        Assert.DoesNotContain(r.Errors, e => e.Message.Contains("\"road_p50_mean < 0.5\""));
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown metric 'sparsenes_mean'") && e.Message.Contains("did you mean 'sparseness_mean'"));
        // The step-level form is checked at validation too (same names: 'pixel_flipping' resolves to pixel_flipping_mean).
        var stepLevel = Assert.Single(r.Errors, e => e.Message.Contains("step 't'"));
        Assert.Contains("no metric 'pixel_fliping'", stepLevel.Message);
        Assert.Contains("did you mean 'pixel_flipping", stepLevel.Message);
        Assert.DoesNotContain(r.Errors, e => e.Message.Contains("step 'u'"));   // no layer: every layer, Quantus's default
    }
}
