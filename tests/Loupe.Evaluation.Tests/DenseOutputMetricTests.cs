using Loupe.Testing;

namespace Loupe.Evaluation.Tests;

/// <summary>Metrics on models whose output is not one score per class (segmentation maps, detections): the faithfulness
/// metrics score the step's target (a class's logits over its region, a box), as pytorch-grad-cam scores such targets;
/// those that compare a predicted class (ROAD's accuracy, the relative stabilities' changed-prediction check,
/// sufficiency, consistency, focus, random-logit) say so instead of failing inside libtorch (or, for focus, reading a
/// per-pixel argmax as N predictions).</summary>
public class DenseOutputMetricTests
{
    static string Model(string folder, string file) =>
        $"{{ uses: onnx, with: {{ path: {Env.Yaml(Path.Combine(Env.Samples, "models", folder, file))}, flatten_output: false, mean: [0, 0, 0], std: [1, 1, 1] }}, labels: {Env.Yaml(Path.Combine(Env.Samples, "models", folder, "labels.txt"))} }}";

    static Loupe.Core.RunResult Run(string model, string target, string steps) => Env.Run($$"""
        version: 1
        model: {{model}}
        data: { uses: image-folder, with: { path: {{Env.Yaml(Path.Combine(Env.Samples, "images", "shapes"))}}, limit: 3 } }
        steps:
          - { id: cam, uses: grad-cam, with: { layer: {{(model.Contains("shapes-seg") ? "backbone.16" : "body.6")}} }, target: {{target}} }
        {{steps}}
        """);

    [Theory]
    [InlineData("shapes-seg", "lraspp.onnx", "{ region: { class: disc } }", "3×64×64")]
    [InlineData("shapes-det", "tinydet.onnx", "{ box: { min_score: 0.3 } }", "64×4")]
    public void Faithfulness_metrics_score_the_target_and_class_comparisons_are_refused_clearly(string folder, string file, string target, string shape)
    {
        var r = Run(Model(folder, file), target, """
              - { id: pf, uses: pixel-flipping, with: { of: cam, features_in_step: 256 } }
              - { id: pf-raw, uses: pixel-flipping, with: { of: cam, features_in_step: 256, softmax: false } }
              - { id: del, uses: deletion, with: { of: cam, steps: 8 } }
              - { id: road, uses: road, with: { of: cam } }
              - { id: ris, uses: relative-input-stability, with: { of: cam, samples: 2 } }
              - { id: ris-all, uses: relative-input-stability, with: { of: cam, samples: 2, skip_changed_predictions: false } }
              - { id: suff, uses: sufficiency, with: { of: cam } }
              - { id: focus, uses: focus, with: { of: cam } }
              - { id: rl, uses: random-logit, with: { of: cam } }
            """);
        var notDefined = $"the model's output is N×{shape}, not one score per class (N×K), so the predicted class this metric compares is not defined";
        Assert.Equal($"road: {notDefined}", HostRuns.StepError(r, "road"));
        Assert.Equal($"relative-input-stability: {notDefined}; set skip_changed_predictions: false to compare without it", HostRuns.StepError(r, "ris"));
        Assert.Equal($"sufficiency: {notDefined}", HostRuns.StepError(r, "suff"));
        Assert.Equal($"focus: {notDefined}", HostRuns.StepError(r, "focus"));
        Assert.StartsWith($"random-logit: it explains another class of a classifier's output (N×K); the model's output is N×{shape}", HostRuns.StepError(r, "rl"));
        // The rest ran: the target's score (no class probability to take on such an output, so softmax changes nothing).
        foreach (var step in new[] { "pf", "pf-raw", "del", "ris-all" }) Assert.Equal("succeeded", HostRuns.Step(r, step)["status"]!.GetValue<string>());
        Assert.Equal(Env.Metric(r, "pf-raw", "pixel_flipping_mean"), Env.Metric(r, "pf", "pixel_flipping_mean"));
        Assert.True(double.IsFinite(Env.Metric(r, "del", "auc_mean")) && double.IsFinite(Env.Metric(r, "ris-all", "relative_input_stability_mean")));
    }

    [Fact]
    public void On_a_multi_label_head_a_sigmoid_target_s_probability_is_its_own_score()
    {
        // A class target in sigmoid mode (each class its own yes/no): a metric that takes the class probability
        // scores σ(z_c), as softmax: false does, not a softmax over the classes; a logit target keeps the softmax.
        string Steps(string mode) => $$"""
              - { id: s, uses: saliency, target: { class: { class: 1, mode: {{mode}} } } }
              - { id: pf, uses: pixel-flipping, with: { of: s, features_in_step: 196 } }
              - { id: pf-raw, uses: pixel-flipping, with: { of: s, features_in_step: 196, softmax: false } }
            """;
        var sigmoid = Env.FixtureRun(Steps("sigmoid"));
        Assert.True(sigmoid.ExitCode == 0, Env.Dump(sigmoid));
        Assert.Equal(Env.Metric(sigmoid, "pf-raw", "pixel_flipping_mean"), Env.Metric(sigmoid, "pf", "pixel_flipping_mean"));
        var logit = Env.FixtureRun(Steps("logit"));
        Assert.True(logit.ExitCode == 0, Env.Dump(logit));
        Assert.NotEqual(Env.Metric(logit, "pf-raw", "pixel_flipping_mean"), Env.Metric(logit, "pf", "pixel_flipping_mean"));
        Assert.InRange(Env.Metric(sigmoid, "pf", "pixel_flipping_mean"), 0, 1);
    }
}
