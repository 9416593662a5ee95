using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary><c>features: values</c> on the complexity metrics: every value of a per-channel map (Quantus takes the
/// a_batch it is given, channels and all), against the metrics' formulas restated here on the raw values.</summary>
public class ComplexityValuesTests
{
    [Fact]
    public void PerChannelMapsAreScoredOnEveryValue()
    {
        // 4 maps of 2×28×28 signed values, one channel twice as large in places: channel sums and values differ.
        var dir = Env.TempDir();
        var rng = new Random(5);
        var data = Enumerable.Range(0, 4 * 2 * 784).Select(i => (float)(rng.NextDouble() * 2 - 1) * (i % 3 == 0 ? 2 : 1) * (rng.NextDouble() < 0.3 ? 0 : 1)).ToArray();
        var path = Path.Combine(dir, "maps.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(data, [4, 2, 28, 28])));
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs.npy"))}} } }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
              - { id: sp, uses: sparseness, with: { of: m, features: values } }
              - { id: cx, uses: complexity, with: { of: m, features: values } }
              - { id: ec, uses: effective-complexity, with: { of: m, features: values, eps: 0.1 } }
              - { id: sp-px, uses: sparseness, with: { of: m } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        double[] Values(string step, string key) => System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, key + ".json")))!["inputs"]!
            .AsArray().Select(i => i!["value"]!.GetValue<double>()).ToArray();
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
}
