using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>The Quantus-style metrics (issue 22) against numpy implementations of their published formulas
/// (tests/fixtures/make_quality_fixtures.py) and on the region CNN, whose right map is known.</summary>
public class QualityTests
{
    static string Fixture(string name) => Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", name));

    /// <summary>Per-input values of a quality metric step (its &lt;key&gt;.json).</summary>
    static double[] Values(Loupe.Core.RunResult r, string step, string key)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, key + ".json")))!;
        return json["inputs"]!.AsArray().Select(i => (i!["value"] ?? i[key])!.GetValue<double>()).ToArray();
    }

    /// <summary>A run of the region CNN on the fixture inputs with the fixture maps as step <c>m</c>, then <paramref name="steps"/>.</summary>
    static Loupe.Core.RunResult FixtureRun(string steps) => Env.Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
        steps:
          - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
        {{steps}}
        """);

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
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'u' (relative-representation-stability): option 'layer' (or 'layers') is required"));
    }

    [Fact]
    public void CompletenessRejectsNonSensitivitysOptions()
    {
        // Each axiomatic metric takes only the options it uses: a key it would ignore fails validation.
        var r = FixtureRun("""
              - { id: c, uses: completeness, with: { of: m, eps: 0.1, features_in_step: 4 } }
            """);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown option 'eps' for step 'c' (completeness)"));
        Assert.Contains(r.Errors, e => e.Message.Contains("unknown option 'features_in_step' for step 'c' (completeness)"));
    }

    [Fact]
    public void MetricsReuseTheMapsOfTheStepTheyEvaluate()
    {
        FixtureMap.Calls = 0;
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
            settings: { batch_size: 2 }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: s, uses: sparseness, with: { of: m } }
              - { id: c, uses: complexity, with: { of: m } }
              - { id: pf, uses: pixel-flipping, with: { of: m, features_in_step: 64 } }
              - { id: other, uses: sparseness, with: { of: m }, target: { class: 1 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // 2 batches for the step itself, none for the three metrics with its target, 2 for the one with another target.
        Assert.Equal(4, FixtureMap.Calls);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected.json")))!;
        Assert.Equal(expected["sparseness"]![1]!.GetValue<double>(), Values(r, "s", "sparseness")[1], 1e-4);
    }

    static Loupe.Core.RunResult RegionRun(string steps, int batchSize)
    {
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(RegionNet.Images(6, 7), [6, 1, 28, 28])));
        return Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(path)}} } }
            settings: { batch_size: {{batchSize}} }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rnd, uses: random-map }
              - { id: edges, uses: sobel-map }
            {{steps}}
            """);
    }

    /// <summary>Three region images (<paramref name="imageSeed"/>) through <paramref name="steps"/> with pipeline seed
    /// <paramref name="seed"/>, on <paramref name="model"/>.</summary>
    internal static (Loupe.Core.RunResult Run, float[] Images) SeededRegionRun(int seed, int imageSeed, string model, string steps)
    {
        var images = RegionNet.Images(3, imageSeed);
        return (RunOn(images, seed, model, steps), images);
    }

    /// <summary>A run with pipeline seed <paramref name="seed"/> on these 1×28×28 images.</summary>
    internal static Loupe.Core.RunResult RunOn(float[] images, int seed, string model, string steps)
    {
        var path = Path.Combine(Env.TempDir(), "region.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(images, [images.Length / 784, 1, 28, 28])));
        return Env.Run($$"""
            version: 1
            seed: {{seed}}
            model: { uses: {{model}} }
            data: { uses: npy, with: { path: {{Env.Yaml(path)}} } }
            steps:
            {{steps}}
            """);
    }

    /// <summary>The generator a metric step draws from for one input: seeded by the step seed (FNV-1a of the step id,
    /// mixed with the pipeline seed, as the host derives it) and the input id.</summary>
    internal static TorchSharp.torch.Generator InputGenerator(int seed, string stepId, string inputId)
    {
        uint h = 2166136261;
        unchecked
        {
            foreach (var c in stepId) { h ^= c; h *= 16777619; }
            return new TorchSharp.torch.Generator(InputSeeds.For((int)(h ^ (uint)seed * 2654435761u) & int.MaxValue, inputId));
        }
    }

    [Fact]
    public void UniformFillsDrawPixelsOrModelInputs()
    {
        // One 28×28 block replaced by the fill (region perturbation, patch 28, one region), logits: the score is
        // (z(x) − z(v))/2 with z = 20·mean_R(relu(·)) − 5. The draw u ~ U[0, 1) is the step's first from the input's
        // generator; `uniform-input` puts u in the model's input space (Quantus's draw on the tensors it is given),
        // `uniform` takes u as pixels and normalises them: (u − 0.5)/0.25 for this model.
        var (r, images) = SeededRegionRun(5, 13, "region-test-scaled", """
              - { id: sal, uses: saliency }
              - { id: rpi, uses: region-perturbation, with: { of: sal, patch: 28, regions: 1, softmax: false, baseline: uniform-input } }
              - { id: rpp, uses: region-perturbation, with: { of: sal, patch: 28, regions: 1, softmax: false, baseline: uniform } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var (step, pixels) in new[] { ("rpi", false), ("rpp", true) })
        {
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "region_perturbation.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(5, step, inputs[i]!["id"]!.GetValue<string>());
                var u = TorchSharp.torch.rand([1, 28, 28], generator: g).data<float>().ToArray();
                double zx = RegionLogit(p => images[i * 784 + p]), zv = RegionLogit(p => pixels ? (u[p] - 0.5) / 0.25 : u[p]);
                double want = (zx - zv) / 2, got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"{step}[{i}]: {got} against {want}");
            }
        }
    }

    [Fact]
    public void RandomRegionOrderIsAPermutationOfTheGridSeededPerInput()
    {
        // patch 14 cuts 28×28 into four blocks; the region R lies in block 0, so the logit stays z until block 0 is
        // replaced (fill: the image minimum 0, z = −5 after) at step perm[0] + 1, perm the input's first draw
        // (randperm(4)): AOPC = (4 − perm[0])·(z + 5)/5.
        var (r, images) = SeededRegionRun(9, 23, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: rnd, uses: region-perturbation, with: { of: gxi, patch: 14, regions: 4, softmax: false, baseline: min, order: random } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rnd", "region_perturbation.json")))!["inputs"]!.AsArray();
        var firsts = new List<long>();
        for (int i = 0; i < 3; i++)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) sum += Math.Max(0, images[i * 784 + y * 28 + x]);
            double z = 20 * sum / 64 - 5;
            using var g = InputGenerator(9, "rnd", inputs[i]!["id"]!.GetValue<string>());
            long first = TorchSharp.torch.randperm(4, generator: g).data<long>()[0];
            firsts.Add(first);
            double want = (4 - first) * (z + 5) / 5, got = inputs[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) < 1e-4, $"rnd[{i}]: {got} against {want} (block 0 at step {first + 1})");
        }
        Assert.True(firsts.Distinct().Count() > 1, "the order differs between inputs");
    }

    [Fact]
    public void UniformStepDrawsOneValuePerPerturbation()
    {
        // Quantus's batched "uniform": one U[low, high) value per input and perturbation call. Region perturbation with
        // one 28×28 region: the copy is the constant u, so the score is (z(x) − z(u))/2, z = 20·mean_R(relu ·) − 5.
        // Faithfulness correlation: run j replaces its subset by u_j. Each input's generator first gives the metric's
        // one-call baseline (a value per input), then the subsets (faithfulness correlation), then the values.
        var (r, images) = SeededRegionRun(8, 19, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: rp, uses: region-perturbation, with: { of: gxi, patch: 28, regions: 1, softmax: false, baseline: uniform-step, uniform_low: -1, uniform_high: 3 } }
              - { id: fc, uses: faithfulness-correlation, with: { of: gxi, runs: 6, subset_size: 60, baseline: uniform-step } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var rp = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "rp", "region_perturbation.json")))!["inputs"]!.AsArray();
        var fc = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "fc", "faithfulness_correlation.json")))!["inputs"]!.AsArray();
        var values = new List<double>();
        for (int i = 0; i < 3; i++)
        {
            Func<int, double> x = p => images[i * 784 + p];
            using (var g = InputGenerator(8, "rp", rp[i]!["id"]!.GetValue<string>()))
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();                           // the one-call baseline
                double u = TorchSharp.torch.rand(1, generator: g).data<float>()[0] * 4f - 1f;
                double want = (RegionLogit(x) - (20 * Math.Max(0, u) - 5)) / 2, got = rp[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"rp[{i}]: {got} against {want} (u = {u})");
                values.Add(u);
            }
            using (var g = InputGenerator(8, "fc", fc[i]!["id"]!.GetValue<string>()))
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();
                var subsets = Enumerable.Range(0, 6).Select(_ => TorchSharp.torch.randperm(784, generator: g).narrow(0, 0, 60).data<long>().ToArray()).ToArray();
                var us = TorchSharp.torch.rand(6, generator: g).data<float>().ToArray();
                double zx = RegionLogit(x), max = Enumerable.Range(0, 784).Where(InRegion).Max(p => Math.Max(0, x(p)));
                var sums = new double[6];
                var drops = new double[6];
                for (int j = 0; j < 6; j++)
                {
                    var set = subsets[j].ToHashSet();
                    sums[j] = set.Where(p => InRegion((int)p)).Sum(p => Math.Max(0, x((int)p)) / max);   // the map relu(x)·c, normalised
                    drops[j] = zx - RegionLogit(p => set.Contains(p) ? us[j] : x(p));
                }
                double ms = sums.Average(), md = drops.Average();
                double cov = sums.Zip(drops, (s1, d) => (s1 - ms) * (d - md)).Sum();
                double want = cov / Math.Sqrt(sums.Sum(s1 => (s1 - ms) * (s1 - ms)) * drops.Sum(d => (d - md) * (d - md)));
                double got = fc[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) < 1e-4, $"fc[{i}]: {got} against {want}");
            }
        }
        Assert.All(values, u => Assert.InRange(u, -1, 3));
        Assert.Contains(values, u => u > 1);   // beyond U[0, 1): the bounds are used
    }

    [Fact]
    public void RelativeStabilitiesFollowQuantusNoiseAndDenominators()
    {
        // Gradient × input of the region CNN is c·x on the region (c = 20/64) and 0 elsewhere, and the logits are
        // (z, −z) with z = 20·mean_R(x) − 5. With x' = x + u, u ~ U[0.02, 0.2] per pixel (Quantus 0.6: one-sided, so the
        // region stays positive and the prediction unchanged), a sample's relative output stability is
        // ‖u_R/x_R‖₂ / ‖h(x) − h(x')‖₂ = ‖u_R/x_R‖₂ / (√2·20·mean_R(u)) and its relative input stability
        // ‖u_R/x_R‖₂ / ‖u/(x + ε·[x = 0])‖₂; the score is the max over samples. The draws are the step's: seeded by the
        // step seed (FNV-1a of the step id and the pipeline seed) and the input id, one U[0, 1) image per sample.
        var (r, images) = SeededRegionRun(3, 11, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ros, uses: relative-output-stability, with: { of: gxi, samples: 4 } }
              - { id: ris, uses: relative-input-stability, with: { of: gxi, samples: 4 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var step in new[] { "ros", "ris" })
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, step == "ros" ? "relative_output_stability.json" : "relative_input_stability.json")))!;
            var inputs = json["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(3, step, inputs[i]!["id"]!.GetValue<string>());
                double best = double.NegativeInfinity;
                for (int j = 0; j < 4; j++)
                {
                    var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().Select(v => v * 0.18 + 0.02).ToArray();
                    double num = 0, sumU = 0, den = 0;
                    for (int p = 0; p < 784; p++)
                    {
                        double x = images[i * 784 + p];
                        bool inRegion = InRegion(p);
                        if (inRegion) { num += u[p] / x * (u[p] / x); sumU += u[p]; }
                        double rel = u[p] / (x == 0 ? 1e-6 : x);
                        den += rel * rel;
                    }
                    double ratio = step == "ros" ? Math.Sqrt(num) / (Math.Sqrt(2) * 20 * sumU / 64) : Math.Sqrt(num) / Math.Sqrt(den);
                    best = Math.Max(best, ratio);
                }
                double got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - best) <= 1e-4 * Math.Abs(best), $"{step}[{i}]: {got} against {best}");
            }
        }
    }

    [Fact]
    public void GaussianInfidelityIsTheMeanSquaredGapOverTheSamples()
    {
        // A zero map predicts no change: infidelity = mean over the samples of (f(x) − f(x − I))², I ~ N(0, σ²) the
        // step's draws (each input's generator, one randn of samples×1×28×28), f = z = 20·mean_R(relu ·) − 5.
        var zeros = Path.Combine(Env.TempDir(), "zeros.npy");
        File.WriteAllBytes(zeros, Npy.Encode(new NdArray(new float[3 * 784], [3, 28, 28])));
        var (r, images) = SeededRegionRun(12, 31, "region-test", $$"""
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(zeros)}} } }
              - { id: inf, uses: infidelity, with: { of: m, samples: 4, sigma: 0.3 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        static double RegionLogit(Func<int, double> x)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int xx = RegionNet.Lo; xx < RegionNet.Hi; xx++) sum += Math.Max(0, x(y * 28 + xx));
            return 20 * sum / 64 - 5;
        }
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "inf", "infidelity.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(12, "inf", inputs[i]!["id"]!.GetValue<string>());
            var noise = TorchSharp.torch.randn([4, 1, 28, 28], generator: g).data<float>().ToArray();
            double z = RegionLogit(p => images[i * 784 + p]), total = 0;
            for (int j = 0; j < 4; j++)
            {
                double drop = z - RegionLogit(p => images[i * 784 + p] - noise[j * 784 + p] * 0.3f);
                total += drop * drop;
            }
            double want = total / 4, got = inputs[i]!["infidelity"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) <= 1e-4 * want, $"inf[{i}]: {got} against {want}");
        }
    }

    [Fact]
    public void CaptumsNormalizedInfidelityIsTheBestScaleOfTheMap()
    {
        // Captum: with a = IᵀΦ, b = f(x) − f(x − I) summed over the samples, infidelity = (Σa² − 2Σab + Σb²)/n and, with
        // normalize, (β²Σa² − 2βΣab + Σb²)/n with β = Σab/Σa². The same step (same id and seed: the same noise) on the map
        // scaled by s gives U(s) = (s²Σa² − 2sΣab + Σb²)/n: three scales give the three sums, hence the normalised value
        // Σb²/n − (Σab)²/(nΣa²), which no scale of the map changes.
        var maps = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "maps.npy"));
        double[] Run(double scale, bool normalize)
        {
            var path = Path.Combine(Env.TempDir(), "maps.npy");
            File.WriteAllBytes(path, Npy.Encode(new NdArray(maps.Data.Select(v => (float)(v * scale)).ToArray(), maps.Shape)));
            var r = Env.Run($$"""
                version: 1
                model: { uses: region-test }
                data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
                steps:
                  - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
                  - { id: inf, uses: infidelity, with: { of: m, samples: 5, sigma: 0.3, normalize: {{(normalize ? "true" : "false")}} } }
                """);
            Assert.True(r.ExitCode == 0, Failures(r));
            return Values(r, "inf", "infidelity");
        }
        var (u1, u2, u3, n1, n5) = (Run(1, false), Run(2, false), Run(3, false), Run(1, true), Run(5, true));
        for (int i = 0; i < u1.Length; i++)
        {
            // U(s) = A s² − 2B s + C (per sample): second differences give A, then B and C.
            double a = (u3[i] - 2 * u2[i] + u1[i]) / 2, bterm = (a * 3 - (u2[i] - u1[i])) / 2, c = u1[i] - a + 2 * bterm;
            double want = c - bterm * bterm / a;
            Assert.True(Math.Abs(n1[i] - want) <= 1e-4 * Math.Abs(u1[i]) + 1e-6, $"normalized[{i}]: {n1[i]} against {want} (from the unnormalised scales)");
            Assert.True(Math.Abs(n5[i] - n1[i]) <= 1e-4 * Math.Abs(n1[i]) + 1e-6, $"normalized[{i}] changed with the map's scale: {n1[i]} against {n5[i]}");
            Assert.True(n1[i] <= u1[i] + 1e-9);
        }
    }

    [Fact]
    public void BlockInfidelityWithARandomFillAveragesFreshPasses()
    {
        // One 28×28 block (patch 28) replaced by u: IᵀΦ = Σ_R c·relu(x)·(x − u), Δf = z(x) − z(u·1), z(u·1) = 20·relu(u) − 5.
        // With uniform-step each of the `samples` passes draws its own u (after the pass's one-call baseline, a value
        // per input); the score is the mean of (IᵀΦ − Δf)² over the passes. A fixed fill runs one pass.
        var (r, images) = SeededRegionRun(10, 29, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: inf, uses: infidelity, with: { of: gxi, perturbation: blocks, patch_sizes: [28], baseline: uniform-step, samples: 3 } }
              - { id: min1, uses: infidelity, with: { of: gxi, perturbation: blocks, samples: 1 } }
              - { id: min5, uses: infidelity, with: { of: gxi, perturbation: blocks, samples: 5 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "inf", "infidelity.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            double sum = 0;
            for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                for (int x = RegionNet.Lo; x < RegionNet.Hi; x++) sum += Math.Max(0, images[i * 784 + y * 28 + x]);
            double z = 20 * sum / 64 - 5;
            using var g = InputGenerator(10, "inf", inputs[i]!["id"]!.GetValue<string>());
            double total = 0;
            for (int pass = 0; pass < 3; pass++)
            {
                TorchSharp.torch.rand([1, 1, 1], generator: g).Dispose();
                float u = TorchSharp.torch.rand(1, generator: g).data<float>()[0];
                double dot = 0;
                for (int y = RegionNet.Lo; y < RegionNet.Hi; y++)
                    for (int x = RegionNet.Lo; x < RegionNet.Hi; x++)
                    {
                        float v = images[i * 784 + y * 28 + x];
                        dot += 20.0 / 64 * Math.Max(0, v) * (v - u);
                    }
                double drop = z - (20 * Math.Max(0, u) - 5);
                total += (dot - drop) * (dot - drop);
            }
            double want = total / 3, got = inputs[i]!["infidelity"]!.GetValue<double>();
            Assert.True(Math.Abs(got - want) <= 1e-4 * Math.Abs(want) + 1e-6, $"inf[{i}]: {got} against {want}");
        }
        Assert.Equal(Values(r, "min1", "infidelity"), Values(r, "min5", "infidelity"));
    }

    [Fact]
    public void QuantusSensitivitiesAreTheMeanAndMaxOfTheRelativeMapChange()
    {
        // Gradient × input of the region CNN is e_p = ±c·relu(x_p) on the region R (c = 20/64), 0 elsewhere (the sign
        // of the explained class cancels in the ratio).
        // Each sample x' = x + u, u ~ U[−0.2, 0.2] per pixel (Quantus's batch_uniform_noise with lower_bound 0.2), gives
        // ‖e − e'‖_F / ‖e‖_F (Quantus's difference and fro_norm); avg-sensitivity takes the mean over samples,
        // max-sensitivity the max. With normalise each map is first divided by its max |·|. The draws are the step's.
        var (r, images) = SeededRegionRun(7, 17, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: avg, uses: avg-sensitivity, with: { of: gxi, samples: 4 } }
              - { id: max, uses: max-sensitivity, with: { of: gxi, samples: 4 } }
              - { id: maxn, uses: max-sensitivity, with: { of: gxi, samples: 4, normalise: true, abs: true } }
              - { id: maxi, uses: max-sensitivity, with: { of: gxi, samples: 4, norm_numerator: linf, norm_denominator: l2 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        double[] Map(Func<int, double> x, bool normalise)
        {
            var e = new double[784];
            for (int p = 0; p < 784; p++)
                if (InRegion(p)) e[p] = 20.0 / 64 * Math.Max(0, x(p));
            double m = e.Max(Math.Abs);
            return normalise ? e.Select(v => v / m).ToArray() : e;
        }
        foreach (var (step, file, max, normalise) in new[] { ("avg", "avg_sensitivity", false, false), ("max", "max_sensitivity", true, false), ("maxn", "max_sensitivity", true, true), ("maxi", "max_sensitivity", true, false) })
        {
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, file + ".json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var g = InputGenerator(7, step, inputs[i]!["id"]!.GetValue<string>());
                var e = Map(p => images[i * 784 + p], normalise);
                var ratios = new List<double>();
                for (int j = 0; j < 4; j++)
                {
                    var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().ToArray();
                    var es = Map(p => images[i * 784 + p] + (float)(u[p] * 0.4 - 0.2), normalise);
                    double numerator = step == "maxi" ? e.Zip(es, (a, b) => Math.Abs(a - b)).Max() : Math.Sqrt(e.Zip(es, (a, b) => (a - b) * (a - b)).Sum());
                    ratios.Add(numerator / Math.Sqrt(e.Sum(v => v * v)));
                }
                double want = max ? ratios.Max() : ratios.Average(), got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) <= 1e-4 * Math.Abs(want) + 1e-7, $"{step}[{i}]: {got} against {want}");
            }
        }
        // The maps differ between the samples (the noise reaches the region), and the max exceeds the mean.
        Assert.True(Env.Metric(r, "max", "max_sensitivity_mean") > Env.Metric(r, "avg", "avg_sensitivity_mean") * 1.01);
    }

    [Fact]
    public void AnInputWhoseTopClassChangesUnderNoiseScoresNaNWhenAsked()
    {
        // Region means close to the decision boundary (z = 20·mean_R(relu x) − 5 = 0 at 0.25): noise U[−0.2, 0.2] flips
        // the first input's class on some samples, never the third's. With nan_when_prediction_changes (Quantus's
        // return_nan_when_prediction_changes) an input is NaN exactly when one of its samples changed class (replayed
        // from the step's draws), else it keeps avg-sensitivity's value, which the run without the option gives.
        var images = new float[3 * 784];
        float[] levels = [0.2502f, 0.27f, 0.6f];
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 784; p++)
                if (InRegion(p))
                    images[i * 784 + p] = levels[i] + 0.002f * ((p * 7 + i) % 5 - 2);
        var r = RunOn(images, 4, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: nan, uses: avg-sensitivity, with: { of: gxi, samples: 6, nan_when_prediction_changes: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "nan", "avg_sensitivity.json")))!["inputs"]!.AsArray();
        var flips = new bool[3];
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(4, "nan", inputs[i]!["id"]!.GetValue<string>());
            double z = RegionLogit(p => images[i * 784 + p]), sum = 0;
            for (int j = 0; j < 6; j++)
            {
                var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().ToArray();
                Func<int, double> xs = p => images[i * 784 + p] + (float)(u[p] * 0.4 - 0.2);
                flips[i] |= RegionLogit(xs) > 0 != z > 0;
                double num = 0, den = 0;
                for (int p = 0; p < 784; p++)
                    if (InRegion(p))
                    {
                        double e = Math.Max(0, images[i * 784 + p]), es = Math.Max(0, xs(p));
                        num += (e - es) * (e - es); den += e * e;
                    }
                sum += Math.Sqrt(num / den);
            }
            var node = inputs[i]!["value"];
            double got = node is null ? double.NaN : node.GetValueKind() == System.Text.Json.JsonValueKind.String
                ? double.Parse(node.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture) : node.GetValue<double>();
            if (flips[i]) Assert.True(double.IsNaN(got), $"input {i} changed class on a sample but scored {got}");
            else Assert.True(Math.Abs(got - sum / 6) <= 1e-4 * sum / 6, $"input {i}: {got} against {sum / 6}");
        }
        Assert.True(flips[0] && !flips[2], $"the boundary inputs should differ: {string.Join(", ", flips)}");
    }

    [Fact]
    public void RelativeOutputStabilityComparesProbabilitiesWhenAsked()
    {
        // Region means near the boundary (z ≈ 1, logits (z, −z)) keep the softmax away from saturation: a sample's value
        // is ‖u_R/x_R‖₂ / ‖p(x) − p(x')‖₂ with p = (σ(2z), 1 − σ(2z)), so the denominator is √2·|σ(2z) − σ(2z')|.
        var images = new float[3 * 784];
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 784; p++)
                if (InRegion(p))
                    images[i * 784 + p] = 0.28f + 0.02f * i + 0.003f * ((p * 3 + i) % 7 - 3);
        var r = RunOn(images, 6, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ross, uses: relative-output-stability, with: { of: gxi, samples: 3, softmax: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        static double Sigmoid(double v) => 1 / (1 + Math.Exp(-v));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "ross", "relative_output_stability.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            using var g = InputGenerator(6, "ross", inputs[i]!["id"]!.GetValue<string>());
            double best = double.NegativeInfinity;
            for (int j = 0; j < 3; j++)
            {
                var u = TorchSharp.torch.rand([1, 1, 28, 28], generator: g).data<float>().Select(v => v * 0.18 + 0.02).ToArray();
                double num = 0, sum = 0, sumU = 0;
                for (int p = 0; p < 784; p++)
                    if (InRegion(p))
                    {
                        double x = images[i * 784 + p];
                        num += u[p] / x * (u[p] / x); sum += x; sumU += u[p];
                    }
                double z = 20 * sum / 64 - 5, zs = 20 * (sum + sumU) / 64 - 5;
                best = Math.Max(best, Math.Sqrt(num) / (Math.Sqrt(2) * Math.Abs(Sigmoid(2 * z) - Sigmoid(2 * zs))));
            }
            double got = inputs[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - best) <= 1e-4 * Math.Abs(best), $"ross[{i}]: {got} against {best}");
        }
    }

    [Fact]
    public void RobustnessIsZeroForAMapThatNoiseCannotChangeAndRandomLogitIsOneForAClassBlindMap()
    {
        // In its region the model is linear in positive pixels: the signed gradient is the same for every noisy copy.
        string[] ids = ["avg-sensitivity", "local-lipschitz", "relative-input-stability", "relative-output-stability"];
        var steps = string.Join("\n", ids.SelectMany(id => new[] { "sal", "rnd" }.Select(m => $"  - {{ id: {m}-{id}, uses: {id}, with: {{ of: {m}, samples: 5 }} }}")))
            + "\n  - { id: sal-rl, uses: random-logit, with: { of: sal } }\n  - { id: edges-rl, uses: random-logit, with: { of: edges } }"
            + "\n  - { id: sal-rrs, uses: relative-representation-stability, with: { of: sal, samples: 3, layer: relu } }"
            + "\n  - { id: rnd-rrs, uses: relative-representation-stability, with: { of: rnd, samples: 3, layer: relu } }";
        var r = RegionRun(steps, 4);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var id in ids)
        {
            var key = id.Replace('-', '_') + "_mean";
            Assert.True(Env.Metric(r, $"sal-{id}", key) < 1e-9, $"{id}: {Env.Metric(r, $"sal-{id}", key)}");
            // (relative-input-stability divides by the relative input change, which the zero background makes huge)
            Assert.True(Env.Metric(r, $"rnd-{id}", key) > (id == "relative-input-stability" ? 1e-3 : 0.1), $"{id} of random maps: {Env.Metric(r, $"rnd-{id}", key)}");
        }
        Assert.True(Env.Metric(r, "sal-rrs", "relative_representation_stability_mean") < 1e-9);
        Assert.True(Env.Metric(r, "rnd-rrs", "relative_representation_stability_mean") > 1e-3);
        // The Sobel map ignores the class: identical maps (SSIM 1). Saliency for the other logit is the negated map.
        Assert.Equal(1.0, Env.Metric(r, "edges-rl", "random_logit_mean"), 1e-9);
        Assert.True(Env.Metric(r, "sal-rl", "random_logit_mean") < 0);
    }

    [Fact]
    public void RandomDrawsAreSeededPerInputSoBatchingDoesNotChangeTheNumbers()
    {
        const string steps = """
              - { id: fc, uses: faithfulness-correlation, with: { of: edges, runs: 10, subset_size: 50 } }
              - { id: rp, uses: region-perturbation, with: { of: sal, patch: 4, regions: 8 } }
              - { id: as, uses: avg-sensitivity, with: { of: edges, samples: 3 } }
              - { id: ll, uses: local-lipschitz, with: { of: edges, samples: 3, micro_batch: 2 } }
              - { id: rl, uses: random-logit, with: { of: sal } }
            """;
        var a = RegionRun(steps, 4);
        var b = RegionRun(steps, 3);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, Failures(a) + Failures(b));
        foreach (var (step, key) in new[] { ("fc", "faithfulness_correlation"), ("rp", "region_perturbation"), ("as", "avg_sensitivity"), ("ll", "local_lipschitz"), ("rl", "random_logit") })
        {
            Assert.Equal(Values(a, step, key), Values(b, step, key));
            Assert.Contains(Values(a, step, key), v => v != 0);
        }
    }
}
