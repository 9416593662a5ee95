using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Evaluation.Tests;

/// <summary>Quantus 0.6.0's SensitivityN run itself (tests/fixtures/make_quantus_fixtures.py, cases
/// <c>sensitivity_n*</c>): Loupe's <c>sensitivity-n</c> with <c>score: quantus</c> gives its per-step correlations
/// across the inputs, on the demo CNN in Quantus's batches of 6 (Loupe's own batches of 5: the correlation spans
/// batches) and on the 3-channel CNN with channel values as features.</summary>
public partial class QuantusReferenceTests
{
    static double[] Steps(RunResult r, string step) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "sensitivity_n.json")))!["steps"]!.AsArray()
            .Select(v => v is null ? double.NaN : v.GetValue<double>()).ToArray();

    [Fact]
    public void SensitivityNWithQuantusScoreGivesQuantusNumbers()
    {
        var r = OnDemoCnn("inputs.npy", 5, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("maps.npy")}} } }
              - { id: sn, uses: sensitivity-n, with: { of: m, score: quantus, features_in_step: 28, quantus_batch_size: 6 } }
              - { id: sn_sp, uses: sensitivity-n, with: { of: m, score: quantus, features_in_step: 4, max_fraction: 0.5, similarity: spearman, softmax: false, quantus_batch_size: 6 } }
              - { id: sn_mean, uses: sensitivity-n, with: { of: m, score: quantus, features_in_step: 49, baseline: running-mean, quantus_batch_size: 6 } }
              - { id: sn_all, uses: sensitivity-n, with: { of: m, score: quantus, features_in_step: 28 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("sensitivity-n (quantus), per step", Want("sensitivity_n"), Steps(r, "sn"), 1e-4);
        m.Close("sensitivity-n (quantus), spearman on logits", Want("sensitivity_n_spearman"), Steps(r, "sn_sp"), 1e-4);
        m.Close("sensitivity-n (quantus), running mean", Want("sensitivity_n_mean"), Steps(r, "sn_mean"), 1e-4);
        // The score is Quantus's aggregate (np.mean over the steps).
        m.Close("sensitivity-n (quantus), mean", [Want("sensitivity_n").Average()], [Env.Metric(r, "sn", "sensitivity_n_mean")], 1e-4);
        m.Check();
        // 22 steps of 28 pixels cover 0.8·784 pixels; every input counts when quantus_batch_size is not given, which
        // changes the correlations.
        var all = Steps(r, "sn_all");
        Assert.Equal(22, all.Length);
        Assert.True(all.Zip(Want("sensitivity_n")).Count(p => Math.Abs(p.First - p.Second) > 1e-3) > 10);
    }

    [Fact]
    public void SensitivityNWithQuantusScoreOnChannelValuesGivesQuantusNumbers()
    {
        var r = OnRgbCnn(4, $$"""
              - { id: m, uses: fixture-map, with: { path: {{Fixture("rgb_maps.npy")}} } }
              - { id: sn, uses: sensitivity-n, with: { of: m, score: quantus, features: values, features_in_step: 16 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("sensitivity-n (quantus), channel values", Want("rgb_sensitivity_n"), Steps(r, "sn"), 1e-4);
        m.Check();
    }

    [Fact]
    public void OptionsThatScoreTheRunAsAWholeAreRefusedUnderShardAndChecked()
    {
        var dir = Env.TempDir();
        var path = Path.Combine(dir, "pipeline.yaml");
        File.WriteAllText(path, $$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 16 } }
            settings: { batch_size: 4 }
            steps:
              - { id: sal, uses: saliency }
              - { id: paper, uses: sensitivity-n, with: { of: sal, runs: 4 } }
              - { id: sn, uses: sensitivity-n, with: { of: sal, score: quantus, features_in_step: 28 } }
              - { id: emprt, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, bins_rule: sturges } }
              - { id: emprt_fd, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, bins_rule: freedman-diaconis } }
            """);
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path)
        { PluginDirectories = [Env.BuiltInPlugins], Shard = new ShardRequest(0, 2) }));
        // The paper's sensitivity-n and a data-free bin rule shard; the two that need every input at once do not.
        Assert.Equal(2, e.Errors.Count);
        Assert.Contains(e.Errors, x => x.Message.Contains("step 'sn' (sensitivity-n) cannot run under --shard 0/2: with score: quantus it correlates each step across the inputs"));
        Assert.Contains(e.Errors, x => x.Message.Contains("step 'emprt_fd' (mprt) cannot run under --shard 0/2: its bins_rule computes the histogram's bins from every map of the run"));

        File.WriteAllText(path, $$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 16 } }
            steps:
              - { id: sal, uses: saliency }
              - { id: a, uses: sensitivity-n, with: { of: sal, quantus_batch_size: 8 } }
              - { id: b, uses: sensitivity-n, with: { of: sal, score: quantus, normalise: negative } }
              - { id: c, uses: sensitivity-n, with: { of: sal, score: quantus, max_fraction: 0 } }
            """);
        var v = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [Env.BuiltInPlugins] }));
        Assert.Equal(3, v.Errors.Count);
        Assert.Contains(v.Errors, x => x.Message.Contains("'quantus_batch_size' applies to score: quantus"));
        Assert.Contains(v.Errors, x => x.Message.Contains("'normalise': negative with score: quantus"));
        Assert.Contains(v.Errors, x => x.Message.Contains("'max_fraction' must be above 0"));
    }

    [Theory]
    [InlineData(0.8, 784, 28, 22)]
    [InlineData(0.8, 784, 1, 627)]
    [InlineData(0.5, 784, 4, 98)]
    [InlineData(0.8, 256, 16, 12)]
    [InlineData(0.29, 100, 1, 28)]   // 0.29·100 = 28.999999999999996
    [InlineData(0.7, 10, 7, 1)]
    public void SensitivityNStepCountIsPythonsFloorDivision(double share, long pixels, int step, long expected) =>
        Assert.Equal(expected, Loupe.Analysis.Evaluation.SensitivityN.StepCount(
            new Loupe.Analysis.Evaluation.FaithfulnessOptions { MaxFraction = share, FeaturesInStep = step }, pixels));
}
