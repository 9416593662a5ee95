using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using Loupe.Testing;

namespace Loupe.Evaluation.Tests;

/// <summary><c>given-maps</c>: maps made elsewhere (Quantus's a_batch) evaluated by the metrics. Maps read back from a
/// run's own saliency files score exactly what the saliency step scored; metrics that explain again refuse them at
/// validation; files that are missing, outside the folder or malformed fail the step, named.</summary>
public class GivenMapsTests
{
    static Loupe.Core.RunResult Run(string steps) => Env.Run($$"""
        version: 1
        model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
        data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 4 } }
        steps:
        {{steps}}
        """);

    const string Metrics = """
          - { id: pf, uses: pixel-flipping, with: { of: m, features_in_step: 56 } }
          - { id: sp, uses: sparseness, with: { of: m } }
          - { id: fe, uses: faithfulness-estimate, with: { of: m, features_in_step: 56 } }
          - { id: road, uses: road, with: { of: m, percentages: [20, 60] } }
        """;

    [Fact]
    public void Maps_read_back_from_a_run_score_what_the_step_that_made_them_scored()
    {
        var made = Run("  - { id: m, uses: saliency }\n" + Metrics);
        Assert.True(made.ExitCode == 0, Env.Dump(made));
        var folder = Env.Yaml(Path.Combine(made.OutDir!, "m"));
        var given = Run($"  - {{ id: m, uses: given-maps, with: {{ folder: {folder}, pattern: \"{{id}}.saliency.npy\" }} }}\n" + Metrics);
        Assert.True(given.ExitCode == 0, Env.Dump(given));
        foreach (var (step, key) in new[] { ("pf", "pixel_flipping"), ("sp", "sparseness"), ("fe", "faithfulness_estimate"), ("road", "road") })
            Assert.Equal(Env.InputValues(made, step, key), Env.InputValues(given, step, key));
    }

    [Fact]
    public void Metrics_that_explain_again_refuse_fixed_maps_at_validation()
    {
        var dir = Env.TempDir();
        var r = Run($$"""
              - { id: m, uses: given-maps, with: { folder: {{Env.Yaml(dir)}} } }
              - { id: as, uses: avg-sensitivity, with: { of: m } }
              - { id: sr, uses: sanity-randomisation, with: { of: m } }
              - { id: rl, uses: random-logit, with: { of: m } }
              - { id: bad, uses: given-maps, with: { folder: {{Env.Yaml(dir)}}, pattern: maps.npy } }
              - { id: nt, uses: noise-tunnel, with: { inner: { uses: given-maps, with: { folder: {{Env.Yaml(dir)}} } } } }
            """);
        Assert.Equal(2, r.ExitCode);
        var errors = r.Errors.Select(e => e.Message).ToList();
        Assert.Contains(errors, e => e.Contains("step 'as' (avg-sensitivity): option 'of': step 'm' gives fixed maps, of the inputs as they are, and this metric explains noisy copies of the inputs"));
        Assert.Contains(errors, e => e.Contains("step 'sr' (sanity-randomisation): option 'of': step 'm' gives fixed maps") && e.Contains("explains the inputs on randomised models"));
        Assert.Contains(errors, e => e.Contains("step 'rl' (random-logit): option 'of': step 'm' gives fixed maps") && e.Contains("explains another class"));
        Assert.Contains(errors, e => e.Contains("step 'bad' (given-maps): option 'pattern' ('maps.npy') must contain {id}"));
        Assert.Contains(errors, e => e.Contains("step 'nt' (noise-tunnel): inner step 'given-maps' gives fixed maps of the inputs as they are; noise-tunnel explains noisy copies of them"));
    }

    [Fact]
    public void Missing_escaping_and_malformed_files_fail_the_step_named()
    {
        var dir = Env.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "00000.npy"), Npy.Encode(new NdArray(new float[28 * 28], [28, 28])));
        var missing = Run($"  - {{ id: m, uses: given-maps, with: {{ folder: {Env.Yaml(dir)} }} }}");
        Assert.Contains("given-maps: folder", HostRuns.StepError(missing, "m"));
        Assert.Contains("has no map for input '00001' (00001.npy)", HostRuns.StepError(missing, "m"));
        var outside = Run($"  - {{ id: m, uses: given-maps, with: {{ folder: {Env.Yaml(dir)}, pattern: \"../{{id}}.npy\" }} }}");
        Assert.Contains("points outside", HostRuns.StepError(outside, "m"));
        for (int i = 1; i < 4; i++) File.WriteAllBytes(Path.Combine(dir, $"{i:D5}.npy"), Npy.Encode(new NdArray([float.NaN, .. new float[28 * 28 - 1]], [28, 28])));
        var nan = Run($"  - {{ id: m, uses: given-maps, with: {{ folder: {Env.Yaml(dir)} }} }}");
        Assert.Contains("00001.npy: the map holds NaN or infinite values", HostRuns.StepError(nan, "m"));
    }
}
