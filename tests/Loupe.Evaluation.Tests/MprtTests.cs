using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Evaluation.Tests;

/// <summary>The per-layer curves of the mprt variants (smooth and efficient, Hedström et al. 2023) on the demo CNN against
/// the PyTorch/numpy restatement of the definition in tests/fixtures/make_mprt_fixtures.py, which draws the same noise
/// and the same random weights from the same seeds (<c>randomise: normal</c>; the default, Quantus's reset, is checked
/// against Quantus itself in QuantusRandomisationTests.cs).</summary>
public class MprtTests
{
    static readonly JsonObject Expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "expected_mprt.json")))!.AsObject();

    static Loupe.Core.RunResult Run(int batch, string steps) => Env.Run($$"""
        version: 1
        model:
          uses: torchvision
          with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} }
        data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "fashion_input.npy"))}} } }
        settings: { batch_size: {{batch}} }
        steps:
          - { id: sal, uses: saliency, with: { abs: false } }
        {{steps}}
        """);

    const string Steps = """
          - { id: smprt, uses: mprt, with: { of: sal, randomise: normal, samples: 4, noise_magnitude: 0.2, expect: ["mprt_mean < 0.5", "mprt_layer7_mean < 0.5"] } }
          - { id: smprt-td, uses: mprt, with: { of: sal, randomise: normal, samples: 3, order: top-down } }
          - { id: emprt, uses: mprt, with: { of: sal, randomise: normal, variant: efficient } }
          - { id: emprt-ind, uses: mprt, with: { of: sal, randomise: normal, variant: efficient, order: independent } }
          - { id: emprt-abs, uses: mprt, with: { of: sal, randomise: normal, variant: efficient, abs: true } }
          - { id: smprt-avg-signed, uses: mprt, with: { of: sal, randomise: normal, samples: 2, abs: false, score: average } }
          - { id: emprt-gini, uses: mprt, with: { of: sal, randomise: normal, variant: efficient, complexity: gini } }
          - { id: emprt-entropy, uses: mprt, with: { of: sal, randomise: normal, variant: efficient, order: top-down, abs: true, complexity: entropy } }
          - { id: smprt-ssim, uses: mprt, with: { of: sal, randomise: normal, samples: 2, similarity: flat-ssim } }
        """;

    static string Failures(Loupe.Core.RunResult r) => string.Join("\n", r.Errors) + string.Join("\n",
        r.Manifest?["steps"]?.AsArray().Where(s => (string?)s!["status"] != "succeeded").Select(s => $"{s!["id"]}: {s["error"]}") ?? []);

    static void Close(double want, double got, string what, double tol)
    {
        Assert.True(Math.Abs(got - want) <= tol + tol * Math.Abs(want), $"{what}: {got} against the reference {want}");
    }

    [Fact]
    public void CurvesMatchThePyTorchReferenceLayerByLayer()
    {
        var r = Run(4, Steps);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var (step, node) in Expected)
        {
            var want = node!["curves"]!.AsArray().Select(c => c!.AsArray().Select(v => v!.GetValue<double>()).ToArray()).ToArray();
            var got = Npy.Read(Path.Combine(r.OutDir!, step, "mprt_curve.npy"));
            Assert.Equal(new long[] { 4, 8 }, got.Shape);
            // Spearman ρ of float32 maps and histogram entropies: a rounding difference moves a rank or a bin at most.
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < 8; k++)
                    Close(want[i][k], got.Data[i * 8 + k], $"{step} input {i} point {k}", 2e-4);
            var score = node["score"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "mprt.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 4; i++) Close(score[i], json[i]!["value"]!.GetValue<double>(), $"{step} score {i}", 2e-4);
            // Per-layer statistics in the metrics (metrics.csv) and the curve's JSON, modules in the reference's order.
            var layers = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "mprt_layers.json")))!;
            Assert.Equal(node["modules"]!.AsArray().Select(m => m!.GetValue<string>()), layers["modules"]!.AsArray().Select(m => m!.GetValue<string>()));
            Assert.Equal(new[] { "original" }.Concat(node["modules"]!.AsArray().Select(m => m!.GetValue<string>())), layers["points"]!.AsArray().Select(p => p!["randomised"]!.GetValue<string>()));
            for (int k = 1; k <= 7; k++)
                Close(want.Average(c => c[k]), Env.Metric(r, step, $"mprt_layer{k}_mean"), $"{step} layer {k} mean", 2e-4);
            Close(want.Average(c => c[0]), Env.Metric(r, step, "mprt_original_mean"), $"{step} original mean", 2e-4);
            Assert.True(File.Exists(Path.Combine(r.OutDir!, step, "mprt_layers.png")));
        }
        var csv = File.ReadAllText(Path.Combine(r.OutDir!, "metrics.csv"));
        Assert.Contains("smprt,mprt,sal,mprt_layer7_mean,", csv);
        Assert.Contains("emprt-ind,mprt,sal,mprt_layer3_std,", csv);
    }

    [Fact]
    public void BatchesGiveTheSameCurvesAndExpectNamesTheLayers()
    {
        var a = Run(4, Steps);
        var b = Run(3, Steps);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, Failures(a) + Failures(b));
        // The same curves to rounding: the batch size can select other convolution kernels (on an AVX-512 Xeon batches of
        // 4 and 3 gave maps a float rounding apart, one curve point 4.5e-7 off), and a rounding difference moves a
        // Spearman rank or a histogram bin at most (the tolerance of the reference test above).
        foreach (var step in new[] { "smprt", "emprt-ind" })
        {
            var (x, y) = (Npy.Read(Path.Combine(a.OutDir!, step, "mprt_curve.npy")), Npy.Read(Path.Combine(b.OutDir!, step, "mprt_curve.npy")));
            Assert.Equal(x.Shape, y.Shape);
            for (int i = 0; i < x.Data.Length; i++) Close(x.Data[i], y.Data[i], $"{step} curve value {i}", 2e-4);
        }
        // A layer past the model's seven modules, or a misspelt series, fails validation with the names it may use.
        var bad = Run(4, """
              - { id: m, uses: mprt, with: { of: sal, variant: efficient, expect: ["mprt_layer8_mean < 1"] } }
              - { id: e, uses: mprt, with: { of: sal, variant: efficient, per_layer: false }, expect: ["mprt_layer2_mean > 0"] }
              - { id: r, uses: mprt, with: { of: sal, bins_rule: scott } }
              - { id: b, uses: mprt, with: { of: sal, variant: efficient, bins_rule: rice, min_bins: 20, max_bins: 10 } }
            """);
        Assert.NotEqual(0, bad.ExitCode);
        var errors = string.Join("\n", bad.Errors);
        Assert.Contains("unknown metric 'mprt_layer8_mean'", errors);
        Assert.Contains("mprt_layer7_mean", errors);
        // The step-level expect: grammar knows the same names (without the curve there is one point).
        Assert.Contains("step 'e': expect 'mprt_layer2_mean > 0': the step writes no metric 'mprt_layer2_mean'", errors);
        // Quantus's bin rules belong to eMPRT's histogram, within bounds that make sense.
        Assert.Contains("option 'bins_rule' applies to variant efficient with complexity discrete-entropy", errors);
        Assert.Contains("option 'min_bins' (20) must not exceed 'max_bins' (10)", errors);
        var last = Run(4, """
              - { id: emprt, uses: mprt, with: { of: sal, randomise: normal, variant: efficient, per_layer: false, expect: ["mprt_layer1_mean > 0"] }, expect: ["mprt_layer1_mean > 1", "mprt_mean < 1"] }
            """);
        Assert.True(last.ExitCode == 0, Failures(last));
        Assert.Equal(new long[] { 4, 2 }, Npy.Read(Path.Combine(last.OutDir!, "emprt", "mprt_curve.npy")).Shape);
        // Without the per-layer curve the end point is the same (the same step id: the same draws).
        Assert.Equal(Env.Metric(a, "emprt", "mprt_mean"), Env.Metric(last, "emprt", "mprt_mean"), 1e-12);
    }

    [Fact]
    public void AveragesLeaveOutOrKeepTheOriginalPoint()
    {
        // average: the mean over the seven randomised points; quantus-average: over all eight, the original's included,
        // as Quantus 0.6's return_average_correlation computes it (mprt.py: the original is stored under "original" and
        // skipped under "orig"). Each step's score from its own curve (the noise is drawn per step).
        var r = Run(4, """
              - { id: avg, uses: mprt, with: { of: sal, randomise: normal, samples: 2, abs: false, reference: given, score: average } }
              - { id: qavg, uses: mprt, with: { of: sal, randomise: normal, samples: 2, abs: false, reference: given, score: quantus-average } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        double[] Point(string step, int i) => Npy.Read(Path.Combine(r.OutDir!, step, "mprt_curve.npy")).Data.AsSpan(i * 8, 8).ToArray().Select(v => (double)v).ToArray();
        double[] Scores(string step) => JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "mprt.json")))!["inputs"]!.AsArray().Select(i => i!["value"]!.GetValue<double>()).ToArray();
        var (avg, qavg) = (Scores("avg"), Scores("qavg"));
        for (int i = 0; i < 4; i++)
        {
            var (a, q) = (Point("avg", i), Point("qavg", i));
            Assert.NotEqual(1.0, q[0], 6);   // the given maps are not the smoothed ones: the original point is below 1
            Close(a.Skip(1).Average(), avg[i], $"average {i}", 1e-6);
            Close(q.Average(), qavg[i], $"quantus-average {i}", 1e-6);
            Assert.True(Math.Abs(q.Average() - q.Skip(1).Average()) > 1e-6, "the original point moves the mean");
        }
        var bad = Run(4, "  - { id: e, uses: mprt, with: { of: sal, variant: efficient, score: quantus-average } }\n");
        Assert.Contains("option 'score': quantus-average applies to variant smooth", string.Join("\n", bad.Errors));
    }

    [Fact]
    public void TheIntactMapsOfTheInputsAreTheStepsOwn()
    {
        CountingMap.Rows = 0;
        var r = Run(4, """
              - { id: cm, uses: counting-map }
              - { id: smprt, uses: mprt, with: { of: cm, samples: 3, per_layer: false } }
              - { id: emprt, uses: mprt, with: { of: cm, variant: efficient, per_layer: false } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // 4 images for the step; smooth: 2 noisy copies on the intact model (the third copy is the input itself: the
        // step's map) and 3 on the randomised one; efficient: the step's map, then 1 on the randomised model.
        Assert.Equal(4 + (2 + 3) * 4 + 4, CountingMap.Rows);
    }

    [Fact]
    public void PerChannelMapsAreSummedOverChannelsAsQuantusExplainDoes()
    {
        // Quantus's MPRT variants score the maps quantus.explain gives them, summed over the channels with their sign
        // (reduce_axes=[1]); mprt flattened a per-channel map's C·H·W values instead (audit of 2026-12-05). On the
        // 3-channel CNN: eMPRT's original point is the 100-bin histogram entropy of the signed channel sum of the
        // step's saved maps (restated here), features: values scores every value, and maps that are already H×W
        // (saliency's reduce: max) score the same either way.
        string Fixture(string name) => Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", name));
        var r = Env.Run($$"""
            version: 1
            model: { uses: onnx, with: { path: {{Fixture("conv_cnn3.onnx")}} } }
            data: { uses: npy, with: { path: {{Fixture("quality/quantus/rgb_inputs.npy")}} } }
            settings: { batch_size: 4 }
            steps:
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: salmax, uses: saliency, with: { reduce: max } }
              - { id: pixels, uses: mprt, with: { of: sal, variant: efficient, per_layer: false } }
              - { id: values, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, features: values } }
              - { id: max-pixels, uses: mprt, with: { of: salmax, variant: efficient, per_layer: false } }
              - { id: max-values, uses: mprt, with: { of: salmax, variant: efficient, per_layer: false, features: values } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        NdArray Curve(string step) => Npy.Read(Path.Combine(r.OutDir!, step, "mprt_curve.npy"));
        var (pixels, values) = (Curve("pixels"), Curve("values"));
        long points = pixels.Shape[1];
        var maps = Directory.GetFiles(Path.Combine(r.OutDir!, "sal"), "*.saliency.npy").Order(StringComparer.Ordinal).Select(f => Npy.Read(f)).ToArray();
        Assert.Equal(pixels.Shape[0], maps.Length);
        bool differs = false;
        for (int i = 0; i < maps.Length; i++)
        {
            Assert.Equal(3, maps[i].Shape[0]);
            int hw = maps[i].Data.Length / 3;
            var sum = Enumerable.Range(0, hw).Select(p => (double)maps[i].Data[p] + maps[i].Data[hw + p] + maps[i].Data[2 * hw + p]).ToArray();
            double lo = sum.Min(), hi = sum.Max();
            var counts = new double[100];
            foreach (var v in sum) counts[Math.Clamp((int)Math.Floor((v - lo) / (hi - lo) * 100), 0, 99)]++;
            double entropy = -counts.Where(c => c > 0).Sum(c => c / hw * Math.Log(c / hw));
            Assert.Equal(entropy, pixels.Data[i * points], 4);   // the curve is stored in float32
            differs |= Math.Abs(pixels.Data[i * points] - values.Data[i * points]) > 1e-3;
        }
        Assert.True(differs, "the channel sum and the C·H·W values gave the same entropies");
        Assert.Equal(Curve("max-pixels").Data, Curve("max-values").Data);
    }
}
