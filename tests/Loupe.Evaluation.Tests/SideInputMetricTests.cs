namespace Loupe.Evaluation.Tests;

/// <summary>Metrics on a model with a side input (the image and a metadata vector, as Captum's tuple inputs): the
/// faithfulness, axiomatic, confidence, complexity and localisation metrics run, each perturbed copy forwarded with its
/// own input's metadata. A copy given another row's metadata would score differently when the inputs share a batch,
/// so the scores are the same with batches of 3 and of 1 (where every copy's row is the only one).</summary>
public class SideInputMetricTests
{
    static readonly string[] Metrics =
    [
        "{ id: pf, uses: pixel-flipping, with: { of: sal, features_in_step: 8 } }",
        "{ id: rp, uses: region-perturbation, with: { of: sal, patch: 2, regions: 8 } }",
        "{ id: fc, uses: faithfulness-correlation, with: { of: sal, runs: 5, subset_size: 8 } }",
        "{ id: road, uses: road, with: { of: sal, percentages: [20, 60] } }",
        "{ id: comp, uses: completeness, with: { of: sal } }",
        "{ id: ns, uses: non-sensitivity, with: { of: sal, features_in_step: 8 } }",
        "{ id: cc, uses: confidence-change, with: { of: sal } }",
        "{ id: sp, uses: sparseness, with: { of: sal } }",
        "{ id: rma, uses: relevance-mass-accuracy, with: { of: sal } }",
        "{ id: as, uses: avg-sensitivity, with: { of: sal, samples: 3 } }",
        "{ id: ll, uses: local-lipschitz, with: { of: sal, samples: 3 } }",
        "{ id: ris, uses: relative-input-stability, with: { of: sal, samples: 3, skip_changed_predictions: false } }",
        "{ id: rrs, uses: relative-representation-stability, with: { of: sal, samples: 3, skip_changed_predictions: false } }",
        "{ id: cont, uses: continuity, with: { of: sal, steps: 2 } }",
        "{ id: del, uses: deletion, with: { of: sal, steps: 8 } }",
        "{ id: inf, uses: infidelity, with: { of: sal } }",
        "{ id: smax, uses: sensitivity-max, with: { of: sal, samples: 3 } }",
        "{ id: rl, uses: random-logit, with: { of: sal } }",
        "{ id: suff, uses: sufficiency, with: { of: sal } }",
        "{ id: mprt, uses: mprt, with: { of: sal, samples: 3 } }",
        "{ id: emprt, uses: mprt, with: { of: sal, variant: efficient } }",
        "{ id: sr, uses: sanity-randomisation, with: { of: sal } }",
        "{ id: ii, uses: input-invariance, with: { of: gxi } }",
    ];

    /// <summary>The two-input fixture (an 8×8 image and a 4-value metadata vector per input id) and its three inputs.</summary>
    static string ModelAndData => $$"""
        model:
          uses: onnx
          with:
            path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "multi_net.onnx"))}}
            image_input: image
            side_inputs: [ { name: meta, folder: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "multi_meta"))}} } ]
        data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "multi_image.npy"))}} } }
        """;

    static Loupe.Core.RunResult Run(int batch) => Env.Run($$"""
        version: 1
        {{ModelAndData}}
        settings: { batch_size: {{batch}} }
        steps:
          - { id: sal, uses: saliency }
          - { id: gxi, uses: gradient-x-input }
        {{string.Join("\n", Metrics.Select(m => "  - " + m))}}
        """);

    [Fact]
    public void Metrics_hold_each_row_s_side_inputs_on_its_copies()
    {
        var three = Run(3);
        Assert.True(three.ExitCode == 0, Env.Dump(three));
        var one = Run(1);
        Assert.True(one.ExitCode == 0, Env.Dump(one));
        foreach (var (step, key) in new[] { ("pf", "pixel_flipping"), ("rp", "region_perturbation"), ("fc", "faithfulness_correlation"), ("road", "road"),
            ("comp", "completeness"), ("ns", "non_sensitivity"), ("cc", "confidence_change"), ("sp", "sparseness"), ("rma", "relevance_mass_accuracy"),
            ("as", "avg_sensitivity"), ("ll", "local_lipschitz"), ("ris", "relative_input_stability"), ("rrs", "relative_representation_stability"),
            ("cont", "continuity"), ("del", "auc"), ("inf", "infidelity"), ("smax", "sensitivity"), ("rl", "random_logit"), ("suff", "sufficiency"),
            ("mprt", "mprt"), ("emprt", "mprt"), ("ii", "input_invariance") })
        {
            var a = Env.InputValues(three, step, key);
            var b = Env.InputValues(one, step, key);
            Assert.Equal(3, a.Length);
            for (int i = 0; i < 3; i++)
                Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * Math.Max(1, Math.Abs(b[i])) || (double.IsNaN(a[i]) && double.IsNaN(b[i])), $"{step}[{i}]: batch 3 {a[i]}, batch 1 {b[i]}");
        }
    }

    [Fact]
    public void Focus_whose_mosaics_mix_inputs_is_still_refused()
    {
        var r = Env.Run($$"""
            version: 1
            {{ModelAndData}}
            steps:
              - { id: sal, uses: saliency }
              - { id: f, uses: focus, with: { of: sal } }
            """);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("step 'f' (focus) cannot explain a model with side inputs (meta)"));
    }
}
