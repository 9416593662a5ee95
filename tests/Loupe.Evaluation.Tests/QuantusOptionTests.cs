using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Analysis.Evaluation;
using static Loupe.Evaluation.Tests.QualityTests;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>Quantus options of the metrics, against closed forms: normalise_func (normalise: max | negative |
/// second-moment, with true and false) on hand-worked rows, the binding of the option's spellings, the relative
/// stabilities (whose <c>normalise: true</c> is Quantus's second-moment estimate), input-invariance's abs/normalise,
/// local-lipschitz's perturb_mean and focus's abs on the region CNN.</summary>
public class QuantusOptionTests
{
    static readonly double[][] Rows =
    [
        [3, -1, 0, 1.5, -4],
        [0, 0, 0, 0, 0],
        [2, 4, 0, 1, 1],
        [-2, -4, 0, -1, -1],
    ];

    static double[][] Apply(Normalisation kind)
    {
        using var scope = NewDisposeScope();
        var a = tensor(Rows.SelectMany(r => r).ToArray(), [Rows.Length, 5]);
        var b = Normalisations.Rows(a, kind).data<double>().ToArray();
        return [.. Enumerable.Range(0, Rows.Length).Select(i => b[(i * 5)..(i * 5 + 5)])];
    }

    static void Same(double[][] want, double[][] got, string what)
    {
        for (int i = 0; i < want.Length; i++)
            for (int j = 0; j < 5; j++)
                Assert.True(Math.Abs(want[i][j] - got[i][j]) < 1e-12, $"{what}[{i}][{j}]: {got[i][j]} against {want[i][j]}");
    }

    [Fact]
    public void TheFunctionsAreQuantussOnEachRow()
    {
        // normalise_by_negative: positives over the row's max, negatives over |min|; a row of one sign over its own
        // extreme; a zero row as it is.
        Same([[1, -0.25, 0, 0.5, -1], [0, 0, 0, 0, 0], [0.5, 1, 0, 0.25, 0.25], [-0.5, -1, 0, -0.25, -0.25]], Apply(Normalisation.Negative), "negative");
        Same([[0.75, -0.25, 0, 0.375, -1], [0, 0, 0, 0, 0], [0.5, 1, 0, 0.25, 0.25], [-0.5, -1, 0, -0.25, -0.25]], Apply(Normalisation.Max), "max");
        // Second moment: Σa²/5 = 5.65 for the first row, 4.4 for the third and fourth.
        double s1 = Math.Sqrt(28.25 / 5), s3 = Math.Sqrt(22.0 / 5);
        Same([Rows[0].Select(v => v / s1).ToArray(), Rows[1], Rows[2].Select(v => v / s3).ToArray(), Rows[3].Select(v => v / s3).ToArray()],
            Apply(Normalisation.SecondMoment), "second moment");
        Same(Rows, Apply(Normalisation.None), "none");
        Assert.Equal(Normalisation.SecondMoment, ((Normalisation?)null).Resolve(true, Normalisation.SecondMoment));
        Assert.Equal(Normalisation.None, ((Normalisation?)null).Resolve(false, Normalisation.SecondMoment));
        Assert.Equal(Normalisation.Negative, ((Normalisation?)Normalisation.Negative).Resolve(false));
    }

    [Fact]
    public void TheOptionTakesBooleansAndNamesAndRejectsOthersWithASuggestion()
    {
        var (bad, _) = SeededRegionRun(1, 2, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: s, uses: sparseness, with: { of: gxi, normalise: negativ } }
            """);
        Assert.NotEqual(0, bad.ExitCode);
        var error = string.Join("\n", bad.Errors);
        Assert.Contains("normalise", error);
        Assert.Contains("did you mean 'negative'", error);
        // The same map under true, max and false: true is max for sparseness (a scale-free Gini, so all agree), and
        // the names bind (a map that is all positive gives the same under negative).
        var (r, _) = SeededRegionRun(1, 2, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: t, uses: sparseness, with: { of: gxi, normalise: true } }
              - { id: f, uses: sparseness, with: { of: gxi, normalise: false } }
              - { id: n, uses: sparseness, with: { of: gxi, normalise: negative } }
              - { id: m, uses: sparseness, with: { of: gxi, normalise: second-moment } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var step in new[] { "f", "n", "m" })
            Assert.Equal(Env.Metric(r, "t", "sparseness_mean"), Env.Metric(r, step, "sparseness_mean"), 5);
    }

    [Fact]
    public void RelativeStabilityNormalisesByTheSecondMomentWhenTrue()
    {
        // Gradient × input of the region CNN is c·x on the region R and 0 elsewhere; x' = x + u, u ~ U[0.02, 0.2] (the
        // step's draws, as in QualityTests). Normalised maps are c·x/s and c·x'/s'; off R both are 0 (Quantus's ε guard
        // gives 0/ε = 0), so a sample's relative input stability is ‖1 − (x'/x)(s/s')‖₂ over R divided by ‖u/x‖₂ over
        // all pixels, with s = √(Σ_R x²/784) for the second moment (normalise: true, Quantus's default function here)
        // and s = max_R x for normalise: max. The score is the max over the samples.
        var (r, images) = SeededRegionRun(3, 11, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ris_true, uses: relative-input-stability, with: { of: gxi, samples: 3, normalise: true } }
              - { id: ris_max, uses: relative-input-stability, with: { of: gxi, samples: 3, normalise: max } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var (step, secondMoment) in new[] { ("ris_true", true), ("ris_max", false) })
        {
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "relative_input_stability.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                var x = images.AsSpan(i * 784, 784).ToArray();
                double Scale(Func<int, double> v) => secondMoment
                    ? Math.Sqrt(Enumerable.Range(0, 784).Where(InRegion).Sum(p => v(p) * v(p)) / 784)
                    : Enumerable.Range(0, 784).Where(InRegion).Max(v);
                using var g = InputGenerator(3, step, inputs[i]!["id"]!.GetValue<string>());
                double best = double.NegativeInfinity;
                for (int j = 0; j < 3; j++)
                {
                    var u = rand([1, 1, 28, 28], generator: g).data<float>().Select(v => v * 0.18 + 0.02).ToArray();
                    double s = Scale(p => x[p]), sp = Scale(p => x[p] + u[p]);
                    double num = 0, den = 0;
                    for (int p = 0; p < 784; p++)
                    {
                        if (InRegion(p)) num += Math.Pow(1 - (x[p] + u[p]) / x[p] * (s / sp), 2);
                        den += Math.Pow(u[p] / (x[p] == 0 ? 1e-6 : x[p]), 2);
                    }
                    best = Math.Max(best, Math.Sqrt(num) / Math.Sqrt(den));
                }
                double got = inputs[i]!["value"]!.GetValue<double>();
                Assert.True(Math.Abs(got - best) <= 1e-4 * Math.Abs(best), $"{step}[{i}]: {got} against {best}");
            }
        }
    }

    [Fact]
    public void LocalLipschitzDrawsAroundItsMean()
    {
        // Gradient × input of the region CNN, normalised by its max |·| (Quantus's default here), is ±x/max x on the
        // region R (x ≥ 0 there) and 0 elsewhere; on x' = x + N(mean, σ²) (the step's draws) it is ±relu(x')/max relu(x')
        // on R, the class fixed on the clean input. The score is the max over samples of ‖Φ − Φ'‖₂ / ‖x − x'‖₂.
        var (r, images) = SeededRegionRun(5, 13, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: ll, uses: local-lipschitz, with: { of: gxi, samples: 3, sigma: 0.1, mean: 0.3 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "ll", "local_lipschitz.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            var x = images.AsSpan(i * 784, 784).ToArray();
            double max = Enumerable.Range(0, 784).Where(InRegion).Max(p => x[p]);
            using var g = InputGenerator(5, "ll", inputs[i]!["id"]!.GetValue<string>());
            double best = double.NegativeInfinity;
            for (int j = 0; j < 3; j++)
            {
                var z = randn([1, 1, 28, 28], generator: g).data<float>().ToArray();
                var xs = x.Select((v, p) => (double)(v + (z[p] * 0.1f + 0.3f))).ToArray();
                double maxS = Enumerable.Range(0, 784).Where(InRegion).Max(p => Math.Max(0, xs[p]));
                double num = Enumerable.Range(0, 784).Where(InRegion).Sum(p => Math.Pow(x[p] / max - Math.Max(0, xs[p]) / maxS, 2));
                double den = Enumerable.Range(0, 784).Sum(p => Math.Pow(xs[p] - x[p], 2));
                best = Math.Max(best, Math.Sqrt(num / den));
            }
            double got = inputs[i]!["value"]!.GetValue<double>();
            Assert.True(Math.Abs(got - best) <= 1e-4 * best, $"ll[{i}]: {got} against {best}");
        }
    }

    [Fact]
    public void InputInvarianceNormalisesBothMapsAndFocusTakesAbs()
    {
        var (r, images) = SeededRegionRun(1, 17, "region-test", """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: gxi, uses: gradient-x-input }
              - { id: ii, uses: input-invariance, with: { of: gxi, shift: -1, normalise: true } }
              - { id: ii-abs, uses: input-invariance, with: { of: gxi, shift: -1, normalise: true, abs: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        // Under the compensated shift the gradient is unchanged, so the maps are g·x and g·(x − 1) on the region's
        // pixels P where x > 0 (g = ±c): normalised, x/max x and (x − 1)/max|x − 1|; with abs both are |·|.
        foreach (var (step, abs) in new[] { ("ii", false), ("ii-abs", true) })
        {
            var got = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "input_invariance.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                var p = Enumerable.Range(0, 784).Where(q => InRegion(q) && images[i * 784 + q] > 0).Select(q => (double)images[i * 784 + q]).ToArray();
                double m = p.Max(), ms = p.Max(v => Math.Abs(v - 1));
                Func<double, double> f = abs ? Math.Abs : v => v;
                double want = p.Sum(v => Math.Abs(f((v - 1) / ms) - f(v / m))) / p.Sum(v => Math.Abs(v / m));
                Assert.True(Math.Abs(got[i]!["value"]!.GetValue<double>() - want) <= 1e-4 * want, $"{step}[{i}]: {got[i]!["value"]} against {want}");
            }
        }
        // The model reads only the top-left quadrant of a mosaic. Signed saliency of class 1 (the odd inputs of the
        // eight, which have partners of both classes) is negative there, so without abs those inputs have no positive
        // relevance (NaN); with abs all relevance lies in that quadrant, so every input scores 0 or 1.
        var eight = Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs8.npy")).Data.ToArray();
        r = RunOn(eight, 1, "region-test", """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: focus, uses: focus, with: { of: sal } }
              - { id: focus-abs, uses: focus, with: { of: sal, abs: true } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var plain = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "focus", "focus.json")))!["inputs"]!.AsArray();
        var withAbs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "focus-abs", "focus.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 8; i++)
        {
            var v = withAbs[i]!["value"]!;
            Assert.True(v.GetValueKind() == System.Text.Json.JsonValueKind.Number && v.GetValue<double>() is 0 or 1, $"focus with abs [{i}] = {v}");
            if (i % 2 == 1) Assert.Equal("NaN", plain[i]!["value"]!.ToString());
        }
    }

    [Fact]
    public void BaselineImagesReplaceTheBaselineInputByInput()
    {
        // Completeness of gradient × input on the region CNN with baseline image x̄ per input: Σa = c·Σ_R relu'(x)·x and
        // f(x) − f(x̄) = c·Σ_R (relu x − relu x̄) (c = 20/64), so the gap is |Σ_R relu x̄| / |Σ_R x − Σ_R relu x̄| over
        // an image whose region is positive. Each input gets its own image (values in [−0.5, 1.5)).
        var images = RegionNet.Images(3, 23);
        var folder = Path.Combine(Env.TempDir(), "baselines");
        Directory.CreateDirectory(folder);
        var rng = new Random(5);
        var baselines = new float[3][];
        for (int i = 0; i < 3; i++)
        {
            baselines[i] = Enumerable.Range(0, 784).Select(_ => (float)(rng.NextDouble() * 2 - 0.5)).ToArray();
            File.WriteAllBytes(Path.Combine(folder, $"{i:00000}.npy"), Npy.Encode(new NdArray(baselines[i], i == 1 ? [28, 28] : [1, 28, 28])));
        }
        var r = RunOn(images, 1, "region-test", $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: c, uses: completeness, with: { of: gxi, baseline_images: {{Env.Yaml(folder)}} } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        var got = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "c", "completeness.json")))!["inputs"]!.AsArray();
        for (int i = 0; i < 3; i++)
        {
            var region = Enumerable.Range(0, 784).Where(InRegion).ToArray();
            double sx = region.Sum(p => (double)Math.Max(0, images[i * 784 + p])), sb = region.Sum(p => (double)Math.Max(0, baselines[i][p]));
            double want = Math.Abs(sb) / Math.Abs(sx - sb);
            Assert.True(Math.Abs(got[i]!["value"]!.GetValue<double>() - want) <= 1e-4 * want, $"completeness[{i}]: {got[i]!["value"]} against {want}");
        }
        // A misshapen image, a missing one, and both spellings of the baseline: errors that name the file or the keys.
        File.WriteAllBytes(Path.Combine(folder, "00001.npy"), Npy.Encode(new NdArray(new float[27 * 28], [27, 28])));
        File.Delete(Path.Combine(folder, "00002.npy"));
        var bad = RunOn(images, 1, "region-test", $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: c, uses: completeness, with: { of: gxi, baseline_images: {{Env.Yaml(folder)}} } }
            """);
        Assert.Contains("00001.npy has shape (27×28); the model's input is 1×28×28", Loupe.Testing.HostRuns.StepError(bad, "c") ?? "");
        File.WriteAllBytes(Path.Combine(folder, "00001.npy"), Npy.Encode(new NdArray(baselines[1], [28, 28])));
        bad = RunOn(images, 1, "region-test", $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: c, uses: completeness, with: { of: gxi, baseline_images: {{Env.Yaml(folder)}} } }
            """);
        Assert.Contains("has no 00002.npy", Loupe.Testing.HostRuns.StepError(bad, "c") ?? "");
        bad = RunOn(images, 1, "region-test", $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: c, uses: completeness, with: { of: gxi, baseline: max, baseline_images: {{Env.Yaml(folder)}} } }
              - { id: r, uses: road, with: { of: gxi, baseline: max } }
            """);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains(bad.Errors, e => e.Message.Contains("step 'c' (completeness): give 'baseline' or 'baseline_images', not both"));
        Assert.Contains(bad.Errors, e => e.Message.Contains("step 'r' (road): option 'baseline' applies to faithfulness-correlation") && e.Message.EndsWith("not to road"));
    }

    [Fact]
    public void NoiseFillsAddQuantussNoiseToTheReplacedValues()
    {
        // Completeness with x̄ = x + noise (the step's draw: one per element from the input's generator; Gaussian
        // N(0.1, 0.3²), or uniform U[−0.4, 0.4] / U[0.1, 0.5]): the gap is |Σ_R relu x̄| / |Σ_R x − Σ_R relu x̄| for the
        // region CNN's gradient × input.
        var (r, images) = SeededRegionRun(4, 29, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: g, uses: completeness, with: { of: gxi, baseline: gaussian-noise, perturb_mean: 0.1, perturb_std: 0.3 } }
              - { id: u, uses: completeness, with: { of: gxi, baseline: uniform-noise, lower_bound: 0.4 } }
              - { id: v, uses: completeness, with: { of: gxi, baseline: uniform-noise, lower_bound: 0.1, upper_bound: 0.5 } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var step in new[] { "g", "u", "v" })
        {
            var got = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "completeness.json")))!["inputs"]!.AsArray();
            for (int i = 0; i < 3; i++)
            {
                using var gen = InputGenerator(4, step, got[i]!["id"]!.GetValue<string>());
                var noise = (step == "g" ? randn([1, 28, 28], generator: gen) * 0.3f + 0.1f
                    : step == "u" ? rand([1, 28, 28], generator: gen) * 0.8f - 0.4f : rand([1, 28, 28], generator: gen) * 0.4f + 0.1f).data<float>().ToArray();
                var region = Enumerable.Range(0, 784).Where(InRegion).ToArray();
                double sx = region.Sum(p => (double)images[i * 784 + p]);
                double sb = region.Sum(p => (double)Math.Max(0, images[i * 784 + p] + noise[p]));
                double want = Math.Abs(sb) / Math.Abs(sx - sb);
                Assert.True(Math.Abs(got[i]!["value"]!.GetValue<double>() - want) <= 1e-4 * want, $"{step}[{i}]: {got[i]!["value"]} against {want}");
            }
        }
        var bad = RunOn(images, 4, "region-test", """
              - { id: gxi, uses: gradient-x-input }
              - { id: u, uses: completeness, with: { of: gxi, baseline: uniform-noise, lower_bound: 0.4, upper_bound: 0.3 } }
            """);
        Assert.Contains(bad.Errors, e => e.Message.Contains("option 'upper_bound' (0.3) must be above 'lower_bound' (0.4)"));
    }

    [Fact]
    public void MapSimilaritiesAreSkimagesAndScipys()
    {
        // tests/fixtures/make_similarity_fixtures.py: skimage's structural_similarity of flattened maps as Quantus
        // calls it, scipy's pearsonr and spearmanr.
        var root = Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality");
        var pairs = Npy.Read(Path.Combine(root, "similarity_pairs.npy"));
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "expected_similarity.json")))!;
        long p = pairs.Shape[0], n = pairs.Shape[2];
        foreach (var (key, kind) in new[] { ("flat_ssim", MapSimilarity.FlatSsim), ("pearson", MapSimilarity.Pearson), ("spearman", MapSimilarity.Spearman), ("kendall", MapSimilarity.Kendall) })
            for (int i = 0; i < p; i++)
            {
                using var a = tensor(pairs.Data.AsSpan((int)(2 * i * n), (int)n).ToArray());
                using var b = tensor(pairs.Data.AsSpan((int)((2 * i + 1) * n), (int)n).ToArray());
                double want = expected[key]![i]!.GetValue<double>(), got = MapSimilarities.Of(kind, a, b, 28, 28);
                Assert.True(Math.Abs(got - want) <= 1e-6, $"{key}[{i}]: {got} against {want}");
            }
        // A constant map has no ranks or variance: scipy's spearmanr, kendalltau and pearsonr give NaN against a varying
        // map or another constant one (Loupe's Spearman gave 0 and 1 until 2026-12-05).
        using (var flat = zeros(784))
        using (var varying = arange(784, dtype: ScalarType.Float32))
            foreach (var kind in new[] { MapSimilarity.Spearman, MapSimilarity.Kendall, MapSimilarity.Pearson })
            {
                Assert.True(double.IsNaN(MapSimilarities.Of(kind, flat, varying, 28, 28)), $"{kind}: constant vs varying");
                Assert.True(double.IsNaN(MapSimilarities.Of(kind, flat, flat, 28, 28)), $"{kind}: constant vs constant");
            }
        // A map that depends on neither the class nor the weights: 1 under every similarity.
        var (r, _) = SeededRegionRun(2, 3, "region-test", """
              - { id: edges, uses: sobel-map }
              - { id: rl, uses: random-logit, with: { of: edges, similarity: flat-ssim } }
              - { id: mp, uses: mprt, with: { of: edges, samples: 1, similarity: pearson } }
              - { id: mf, uses: mprt, with: { of: edges, samples: 1, similarity: flat-ssim } }
              - { id: mk, uses: mprt, with: { of: edges, samples: 1, similarity: kendall } }
            """);
        Assert.True(r.ExitCode == 0, Failures(r));
        foreach (var (step, key) in new[] { ("rl", "random_logit"), ("mp", "mprt"), ("mf", "mprt"), ("mk", "mprt") })
            Assert.Equal(1.0, Env.Metric(r, step, key + "_mean"), 9);
        var bad = RunOn(RegionNet.Images(3, 3), 2, "region-test", """
              - { id: edges, uses: sobel-map }
              - { id: m, uses: mprt, with: { of: edges, similarity: ssim } }
            """);
        Assert.Contains(bad.Errors, e => e.Message.Contains("mprt takes spearman, pearson, kendall or flat-ssim"));
    }
}

