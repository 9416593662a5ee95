using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Evaluation.Tests;

/// <summary>Which faithfulness metrics take <c>score</c>, <c>runs: 1</c> and <c>eps</c> (audit of 2026-12-05: <c>score:
/// quantus</c> was read by five metrics and silently ignored by the others; monotonicity-correlation could not take
/// Quantus's nr_samples=1 nor its eps).</summary>
public class FaithfulnessOptionRulesTests
{
    [Fact]
    public void ScoreAndRunsAreCheckedWhereTheyMeanSomething()
    {
        var path = OptionReadersTests.Pipeline("""
              - { id: fe, uses: faithfulness-estimate, with: { of: sal, score: quantus } }
              - { id: road, uses: road, with: { of: sal, score: quantus } }
              - { id: fc, uses: faithfulness-correlation, with: { of: sal, runs: 1 } }
              - { id: rp, uses: region-perturbation, with: { of: sal, score: quantus } }
              - { id: mc, uses: monotonicity-correlation, with: { of: sal, runs: 1, eps: 0.5 } }
            """);
        var v = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [Env.BuiltInPlugins] }));
        Assert.True(v.Errors.Count == 3, string.Join("\n", v.Errors.Select(e => e.Message)));
        Assert.Contains(v.Errors, x => x.Message.Contains("option 'score' applies to irof, pixel-flipping, region-perturbation, selectivity and sensitivity-n, not to faithfulness-estimate"));
        Assert.Contains(v.Errors, x => x.Message.Contains("not to road"));
        Assert.Contains(v.Errors, x => x.Message.Contains("option 'runs' must be at least 2 for faithfulness-correlation"));
    }

    [Fact]
    public void MonotonicityCorrelationTakesOneSampleAndAnyEps()
    {
        // One sample per step (Quantus nr_samples=1) runs; eps only decides whether a row's variances are divided by
        // f(x)², one positive factor per input, so no Spearman correlation moves with it.
        var r = Env.FixtureRun("""
              - { id: one, uses: monotonicity-correlation, with: { of: m, features_in_step: 56, runs: 1, baseline: min } }
              - { id: eps, uses: monotonicity-correlation, with: { of: m, features_in_step: 56, runs: 1, baseline: min, eps: 1000 } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var one = Env.InputValues(r, "one", "monotonicity_correlation");
        Assert.Contains(one, v => !double.IsNaN(v) && v != 0);
        Assert.Equal(one, Env.InputValues(r, "eps", "monotonicity_correlation"));
    }
}

/// <summary>region-perturbation and selectivity on per-channel maps: Quantus sums a region over every channel value of
/// the normalised (and, under abs, absolute) map; Loupe summed the channels first (audit of 2026-12-05).</summary>
public class RegionChannelSumTests
{
    [Fact]
    public void RegionsRankBySummedChannelMagnitudesUnderAbs()
    {
        // Channels X, −X, 0: under abs Quantus ranks regions by Σ|X| (2|X| per pixel), exactly as an H×W map |X|
        // ranks them; the channel sum is 0 everywhere, so ranking it (the former order) ties every region.
        var dir = Env.TempDir();
        var rng = new Random(3);
        const int n = 6, side = 16, hw = side * side;
        var perChannel = new float[n * 3 * hw];
        var magnitude = new float[n * hw];
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++)
            {
                float x = (float)(rng.NextDouble() * 2 - 1);
                perChannel[(i * 3) * hw + p] = x;
                perChannel[(i * 3 + 1) * hw + p] = -x;
                magnitude[i * hw + p] = Math.Abs(x);
            }
        var pc = Path.Combine(dir, "per-channel.npy");
        var mag = Path.Combine(dir, "magnitude.npy");
        File.WriteAllBytes(pc, Npy.Encode(new NdArray(perChannel, [n, 3, side, side])));
        File.WriteAllBytes(mag, Npy.Encode(new NdArray(magnitude, [n, side, side])));
        string Fixture(string name) => Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", name));
        var r = Env.Run($$"""
            version: 1
            model: { uses: onnx, with: { path: {{Fixture("conv_cnn3.onnx")}} } }
            data: { uses: npy, with: { path: {{Fixture("quality/quantus/rgb_inputs.npy")}} } }
            steps:
              - { id: pc, uses: fixture-map, with: { path: {{Env.Yaml(pc)}} } }
              - { id: mag, uses: fixture-map, with: { path: {{Env.Yaml(mag)}} } }
              - { id: rp-pc, uses: region-perturbation, with: { of: pc, patch: 4, regions: 16, abs: true } }
              - { id: rp-mag, uses: region-perturbation, with: { of: mag, patch: 4, regions: 16, abs: true } }
              - { id: rp-signed, uses: region-perturbation, with: { of: pc, patch: 4, regions: 16 } }
              - { id: sel-pc, uses: selectivity, with: { of: pc, patch: 4, abs: true } }
              - { id: sel-mag, uses: selectivity, with: { of: mag, patch: 4, abs: true } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        float[] Curve(string step, string key) => Npy.Read(Path.Combine(r.OutDir!, step, key + "_curve.npy")).Data;
        Assert.Equal(Curve("rp-mag", "region_perturbation"), Curve("rp-pc", "region_perturbation"));
        Assert.Equal(Curve("sel-mag", "selectivity"), Curve("sel-pc", "selectivity"));
        Assert.NotEqual(Curve("rp-mag", "region_perturbation"), Curve("rp-signed", "region_perturbation"));
    }
}

/// <summary>focus normalises each map before Quantus's 1e-9 guard (audit of 2026-12-05: a map of tiny values scored
/// ~0 in Loupe and ~1 in Quantus, whose default normalise_by_max runs first).</summary>
public class FocusNormaliseTests
{
    [Fact]
    public void TinyMapsScoreAsQuantusScoresThemAfterNormalising()
    {
        var dir = Env.TempDir();
        const int n = 4;
        var maps = new float[n * 784];
        for (int i = 0; i < n; i++) maps[i * 784] = 1e-12f;   // all relevance at (0, 0): the top-left quadrant
        var path = Path.Combine(dir, "tiny.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(maps, [n, 28, 28])));
        var csv = Path.Combine(dir, "quadrants.csv");
        File.WriteAllLines(csv, ["id,tl,tr,bl,br", .. Enumerable.Range(0, n).Select(i => $"{i:D5},1,0,0,0")]);
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.QualityFixture("inputs.npy")}} } }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
              - { id: focus, uses: focus, with: { of: m, quadrants: {{Env.Yaml(csv)}} } }
              - { id: raw, uses: focus, with: { of: m, quadrants: {{Env.Yaml(csv)}}, normalise: false } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        // Quantus: a / max|a| = 1 at (0, 0), so 1 / (1 + 1e-9); unnormalised 1e-12 / (1e-12 + 1e-9).
        Assert.All(Env.InputValues(r, "focus", "focus"), v => Assert.Equal(1 / (1 + 1e-9), v, 9));
        Assert.All(Env.InputValues(r, "raw", "focus"), v => Assert.Equal(1e-12 / (1e-12 + 1e-9), v, 6));
    }
}

/// <summary>The localisation metrics take <c>normalise_over</c>: Quantus normalises the a_batch of a call together,
/// which matters under <c>normalise: negative</c> (audit of 2026-12-05).</summary>
public class LocalisationNormaliseOverTests
{
    [Fact]
    public void RelevanceMassOverTheBatchUsesTheBatchsMaxAndMin()
    {
        // Map 1: 2, −1, 1 at pixels 0..2; map 2: 4, −1 at pixels 0..1 (zeros elsewhere); masks: pixel 0.
        // normalise_by_negative per map: map 1 → 1, −1, 0.5, mass 1 / 0.5 = 2. Over the batch (positives over 4,
        // negatives over 1): map 1 → 0.5, −1, 0.25, mass 0.5 / −0.25 = −2 (Quantus's number for one call of both).
        var dir = Env.TempDir();
        var maps = new float[4 * 784];
        maps[0] = 2; maps[1] = -1; maps[2] = 1;
        maps[784] = 4; maps[785] = -1;
        maps[2 * 784] = 1; maps[3 * 784] = 1;
        var path = Path.Combine(dir, "maps.npy");
        File.WriteAllBytes(path, Npy.Encode(new NdArray(maps, [4, 28, 28])));
        var masks = Directory.CreateDirectory(Path.Combine(dir, "masks")).FullName;
        var mask = new float[784];
        mask[0] = 1;
        for (int i = 0; i < 4; i++) File.WriteAllBytes(Path.Combine(masks, $"{i:D5}.npy"), Npy.Encode(new NdArray(mask, [28, 28])));
        var r = Env.Run($$"""
            version: 1
            model: { uses: region-test }
            data: { uses: npy, with: { path: {{Env.QualityFixture("inputs.npy")}} } }
            settings: { batch_size: 2 }
            steps:
              - { id: m, uses: fixture-map, with: { path: {{Env.Yaml(path)}} } }
              - { id: map, uses: relevance-mass-accuracy, with: { of: m, masks: {{Env.Yaml(masks)}}, normalise: negative } }
              - { id: batch, uses: relevance-mass-accuracy, with: { of: m, masks: {{Env.Yaml(masks)}}, normalise: negative, normalise_over: batch } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Assert.Equal(2, Env.InputValues(r, "map", "relevance_mass_accuracy")[0], 9);
        Assert.Equal(-2, Env.InputValues(r, "batch", "relevance_mass_accuracy")[0], 9);
    }
}
