using Loupe.Testing;

namespace Loupe.Evaluation.Tests;

/// <summary>Metrics on models whose output is not one score per class (segmentation maps, detections): the faithfulness
/// metrics score the step's target (a class's logits over its region, a box), as pytorch-grad-cam scores such targets;
/// those that compare a predicted class (ROAD's accuracy, the relative stabilities' and continuity's changed-prediction
/// checks, sufficiency, consistency, focus, random-logit) and an explicit softmax are refused at validation, from the
/// host's probe of the output (not failing inside libtorch, or, for focus, reading a per-pixel argmax as N
/// predictions).</summary>
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
    public void Faithfulness_metrics_score_the_target_and_class_comparisons_are_refused_at_validation(string folder, string file, string target, string shape)
    {
        // Everything that needs a class axis is refused before anything runs, every step at once, at its line.
        var refused = Run(Model(folder, file), target, """
              - { id: pf-soft, uses: pixel-flipping, with: { of: cam, features_in_step: 256, softmax: true } }
              - { id: road, uses: road, with: { of: cam } }
              - { id: ris, uses: relative-input-stability, with: { of: cam, samples: 2 } }
              - { id: cont, uses: continuity, with: { of: cam, nan_when_prediction_changes: true } }
              - { id: suff, uses: sufficiency, with: { of: cam } }
              - { id: focus, uses: focus, with: { of: cam } }
              - { id: rl, uses: random-logit, with: { of: cam } }
            """);
        Assert.Equal(2, refused.ExitCode);
        var errors = refused.Errors.Select(e => e.Message).ToList();
        var notDefined = $"the model's output is N×{shape}, not one score per class (N×K), so the predicted class this metric compares is not defined";
        Assert.Contains($"step 'road' (road): {notDefined}", errors);
        Assert.Contains($"step 'ris' (relative-input-stability): {notDefined}; set skip_changed_predictions: false to compare without it", errors);
        Assert.Contains($"step 'cont' (continuity): {notDefined}; set nan_when_prediction_changes: false", errors);
        Assert.Contains($"step 'suff' (sufficiency): {notDefined}", errors);
        Assert.Contains($"step 'focus' (focus): {notDefined}", errors);
        Assert.Contains(errors, e => e.StartsWith($"step 'rl' (random-logit): it explains another class of a classifier's output (N×K); the model's output is N×{shape}"));
        Assert.Contains(errors, e => e.StartsWith($"step 'pf-soft' (pixel-flipping): option 'softmax': the model's output is N×{shape}, not one score per class (N×K)"));
        Assert.Equal(7, errors.Count);
        // What needs none runs: the target's score (no class probability to take, so Quantus's default softmax changes nothing).
        var r = Run(Model(folder, file), target, """
              - { id: pf, uses: pixel-flipping, with: { of: cam, features_in_step: 256 } }
              - { id: pf-raw, uses: pixel-flipping, with: { of: cam, features_in_step: 256, softmax: false } }
              - { id: del, uses: deletion, with: { of: cam, steps: 8 } }
              - { id: ris-all, uses: relative-input-stability, with: { of: cam, samples: 2, skip_changed_predictions: false } }
            """);
        Assert.True(r.ExitCode == 0, Env.Dump(r));
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
