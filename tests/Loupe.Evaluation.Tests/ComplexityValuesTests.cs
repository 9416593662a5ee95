using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary><c>features: values</c> on the complexity metrics: every value of a per-channel map (Quantus takes the
/// a_batch it is given, channels and all), against the metrics' formulas restated here on the raw values.</summary>
public class ComplexityValuesTests
{
    /// <summary>A run of the region CNN on the 4 quality fixture inputs with <paramref name="maps"/> as step <c>m</c>
    /// (written to <paramref name="dir"/>), then <paramref name="steps"/>; asserts it succeeded.</summary>
    static Loupe.Core.RunResult OnMaps(string dir, NdArray maps, string steps)
    {
        var r = Env.Run(MapsPipeline(dir, maps, steps));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        return r;
    }

    /// <summary>The pipeline of <see cref="OnMaps"/>: the region CNN, the 4 quality fixture inputs, <paramref name="maps"/>
    /// (written to <paramref name="dir"/>) as step <c>m</c>, then <paramref name="steps"/>.</summary>
    internal static string MapsPipeline(string dir, NdArray maps, string steps)
    {
        var path = Path.Combine(dir, "maps.npy");
        File.WriteAllBytes(path, Npy.Encode(maps));
        return $$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.QualityFixture("inputs.npy")}} } }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
            {{steps}}
            """;
    }

    [Fact]
    public void PerChannelMapsAreScoredOnEveryValue()
    {
        // 4 maps of 2×28×28 signed values, one channel twice as large in places: channel sums and values differ.
        var dir = Env.TempDir();
        var rng = new Random(5);
        var data = Enumerable.Range(0, 4 * 2 * 784).Select(i => (float)(rng.NextDouble() * 2 - 1) * (i % 3 == 0 ? 2 : 1) * (rng.NextDouble() < 0.3 ? 0 : 1)).ToArray();
        var r = OnMaps(dir, new NdArray(data, [4, 2, 28, 28]), """
              - { id: sp, uses: sparseness, with: { of: m, features: values } }
              - { id: cx, uses: complexity, with: { of: m, features: values } }
              - { id: ec, uses: effective-complexity, with: { of: m, features: values, eps: 0.1 } }
              - { id: sp-px, uses: sparseness, with: { of: m } }
            """);
        double[] Values(string step, string key) => Env.InputValues(r, step, key);
        var (sp, cx, ec) = (Values("sp", "sparseness"), Values("cx", "complexity"), Values("ec", "effective_complexity"));
        for (int i = 0; i < 4; i++)
        {
            // Quantus's order: normalise_by_max over the map's values, then |·|.
            var v = data.AsSpan(i * 1568, 1568).ToArray().Select(x => (double)x).ToArray();
            double max = v.Max(Math.Abs);
            var a = v.Select(x => Math.Abs(x / max)).ToArray();
            var s = a.Select(x => x + 1e-7).Order().ToArray();
            double gini = s.Select((x, k) => (2.0 * (k + 1) - s.Length - 1) * x).Sum() / (s.Length * s.Sum());
            Assert.Equal(gini, sp[i], 9);
            double total = a.Sum();
            Assert.Equal(-a.Select(x => x / total).Sum(p => p * Math.Log(p + 1e-12)), cx[i], 9);
            Assert.Equal(a.Count(x => x > 0.1), ec[i], 9);
        }
        Assert.NotEqual(sp, Values("sp-px", "sparseness"));   // the channel-summed pixels score otherwise
    }

    [Fact]
    public void AbsFalseScoresTheSignedValuesAsQuantusDoes()
    {
        // Quantus applies |·| only through abs=True: with abs=False sparseness runs its Gini formula on the signed
        // values (+1e-7) and complexity divides by Σ|a| and takes the log of negative shares (NaN). Loupe took |·|
        // inside both formulas, so abs: false changed nothing (audit of 2026-12-05: [1, −1] gave 0 and ln 2).
        var dir = Env.TempDir();
        var rng = new Random(9);
        var data = Enumerable.Range(0, 4 * 784).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var r = OnMaps(dir, new NdArray(data, [4, 28, 28]), """
              - { id: sp, uses: sparseness, with: { of: m, abs: false } }
              - { id: cx, uses: complexity, with: { of: m, abs: false } }
              - { id: ec, uses: effective-complexity, with: { of: m, abs: false, eps: 0.1 } }
              - { id: sp-abs, uses: sparseness, with: { of: m } }
            """);
        double[] Values(string step, string key) => Env.InputValues(r, step, key);
        var (sp, cx, ec, spAbs) = (Values("sp", "sparseness"), Values("cx", "complexity"), Values("ec", "effective_complexity"), Values("sp-abs", "sparseness"));
        for (int i = 0; i < 4; i++)
        {
            var v = data.AsSpan(i * 784, 784).ToArray().Select(x => (double)x).ToArray();
            double max = v.Max(Math.Abs);
            var a = v.Select(x => x / max).ToArray();   // normalise_by_max, no |·|
            var s = a.Select(x => x + 1e-7).Order().ToArray();
            double gini = s.Select((x, k) => (2.0 * (k + 1) - s.Length - 1) * x).Sum() / (s.Length * s.Sum());
            Assert.True(Math.Abs(gini - sp[i]) <= 1e-9 * Math.Abs(gini), $"sparseness {sp[i]:R}, the signed Gini {gini:R}");
            Assert.True(double.IsNaN(cx[i]), $"complexity of a signed map: {cx[i]} (Quantus: NaN)");
            Assert.Equal(a.Count(x => x > 0.1), ec[i], 9);
            Assert.NotEqual(sp[i], spAbs[i]);
        }
    }

    [Fact]
    public void ConsistencyOnValuesComparesEveryChannelsSigns()
    {
        // Maps of 2×28×28 for the 8 inputs, grouped by the class the model predicts: within a group every map is the
        // group's base map with channel 0 scaled by 2^k and channel 1 by 2^−k (k the member's place) — the same sign at
        // every value, but channel sums of another sign wherever the two channels disagree enough. Signs of all values
        // (discretise: sign, abs: false): an input agrees with the other members of its group, all predicted alike, so
        // it scores 1 in a group of two or more, else 0; on channel-summed pixels no two agree: 0.
        var dir = Env.TempDir();
        var path = Path.Combine(dir, "maps.npy");
        string Pipeline() => $$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs8.npy"))}} } }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
              - { id: values, uses: consistency, with: { of: m, features: values, discretise: sign, abs: false } }
              - { id: pixels, uses: consistency, with: { of: m, discretise: sign, abs: false } }
            """;
        var rng = new Random(11);
        File.WriteAllBytes(path, Npy.Encode(new NdArray(new float[8 * 1568], [8, 2, 28, 28])));
        var first = Env.Run(Pipeline());
        var predicted = File.ReadAllLines(Path.Combine(first.OutDir!, "predictions.jsonl"))
            .Select(l => (long)System.Text.Json.Nodes.JsonNode.Parse(l)!["top"]![0]!["class"]!).ToArray();
        var data = new float[8 * 1568];
        foreach (var group in Enumerable.Range(0, 8).GroupBy(i => predicted[i]))
        {
            var baseMap = Enumerable.Range(0, 1568).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            foreach (var (i, k) in group.Select((i, k) => (i, k)))
                for (int v = 0; v < 1568; v++) data[i * 1568 + v] = baseMap[v] * MathF.Pow(2, v < 784 ? k : -k);
        }
        File.WriteAllBytes(path, Npy.Encode(new NdArray(data, [8, 2, 28, 28])));
        var r = Env.Run(Pipeline());
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        double[] Values(string step) => Env.InputValues(r, step, "consistency");
        var want = Enumerable.Range(0, 8).Select(i => predicted.Count(p => p == predicted[i]) > 1 ? 1.0 : 0.0).ToArray();
        Assert.Contains(1.0, want);   // some inputs share a prediction: the values mode has agreements to find
        Assert.Equal(want, Values("values"));
        Assert.All(Values("pixels"), v => Assert.Equal(0.0, v));
    }
}
