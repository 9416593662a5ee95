using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Evaluation.Tests;

/// <summary>Options a metric does not read (ReadsOptionsAttribute): the metric families share one options record each,
/// and an option of another member used to be accepted and ignored (road with patch: 4, attribution-localisation with
/// k, smooth mprt with bins). Now the host refuses it — every such option of a step at once, naming the members that
/// read it — and describe, the library and the schema list only what a metric reads.</summary>
public class OptionReadersTests
{
    static ComponentRegistry Registry() => ComponentRegistry.Load([Env.BuiltInPlugins]);

    /// <summary>A pipeline on the demo CNN (4 images) with a saliency step 'sal' and <paramref name="steps"/>.</summary>
    internal static string Pipeline(string steps)
    {
        var path = Path.Combine(Env.TempDir(), "p.yaml");
        File.WriteAllText(path, $$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 4 } }
            steps:
              - { id: sal, uses: saliency }
            {{steps}}
            """);
        return path;
    }

    static List<string> Errors(string steps)
    {
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(Pipeline(steps)) { PluginDirectories = [Env.BuiltInPlugins] }));
        return e.Errors.Select(x => x.Message).ToList();
    }

    [Fact]
    public void AnOptionOfAnotherMetricIsRefusedNamingTheMetricsThatReadIt()
    {
        var errors = Errors("""
              - { id: r, uses: road, with: { of: sal, patch: 4, runs: 3, baseline: 0.5, softmax: true, percentages: [10, 20] } }
              - { id: pf, uses: pixel-flipping, with: { of: sal, noise: 0.3, features: values } }
              - { id: a, uses: avg-sensitivity, with: { of: sal, eps_min: 0.1 } }
              - { id: l, uses: attribution-localisation, with: { of: sal, k: 5 } }
              - { id: s, uses: sparseness, with: { of: sal, eps: 0.1 } }
              - { id: c, uses: consistency, with: { of: sal, distance: euclidean } }
            """);
        string[] want =
        [
            "step 'r' (road): option 'patch' applies to region-perturbation and selectivity, not to road",
            "step 'r' (road): option 'runs' applies to faithfulness-correlation, monotonicity-correlation and sensitivity-n, not to road",
            // a constant baseline binds to baseline_value, read with baseline
            "step 'r' (road): option 'baseline' applies to faithfulness-correlation, faithfulness-estimate, irof, monotonicity, monotonicity-correlation, pixel-flipping, region-perturbation, selectivity and sensitivity-n, not to road",
            "step 'pf' (pixel-flipping): option 'noise' applies to road, not to pixel-flipping",
            "step 'a' (avg-sensitivity): option 'eps_min' applies to relative-input-stability, relative-output-stability and relative-representation-stability, not to avg-sensitivity",
            "step 'l' (attribution-localisation): option 'k' applies to top-k-intersection, not to attribution-localisation",
            "step 's' (sparseness): option 'eps' applies to effective-complexity, not to sparseness",
            "step 'c' (consistency): option 'distance' applies to sufficiency, not to consistency",
        ];
        foreach (var w in want) Assert.Contains(errors, e => e.Contains(w));
        // percentages on road and features on pixel-flipping are read; softmax too, on every metric, as every Quantus
        // metric's call takes it (road's argmax does not depend on it)
        Assert.Equal(want.Length, errors.Count);
    }

    [Fact]
    public void UnreadOptionsAreReportedWithAModelThatFailsToLoad()
    {
        var weights = Path.Combine(Env.TempDir(), "broken.safetensors");
        File.WriteAllText(weights, "not a safetensors file");
        var path = Path.Combine(Env.TempDir(), "p.yaml");
        File.WriteAllText(path, $$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.Yaml(weights)}} } }
            data: { uses: idx, with: { images: {{Env.DemoImages}}, limit: 4 } }
            steps:
              - { id: sal, uses: saliency }
              - { id: r, uses: road, with: { of: sal, patch: 4 } }
            """);
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [Env.BuiltInPlugins] }));
        Assert.Contains(e.Errors, x => x.Message.StartsWith("model 'torchvision'", StringComparison.Ordinal));
        Assert.Contains(e.Errors, x => x.Message.Contains("step 'r' (road): option 'patch' applies to region-perturbation and selectivity, not to road"));
    }

    [Fact]
    public void AnUnreadOptionAtItsDefaultIsAccepted()
    {
        // The library writes a typed options record whole (every property, defaults included): a FaithfulnessOptions
        // given to road carries patch: 8, runs: 100, ... — only values that would change something are refused.
        var path = Pipeline("""
              - { id: r, uses: road, with: { of: sal, patch: 8, runs: 100, windows: grid, similarity: null, percentages: [50] } }
            """);
        using var run = PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [Env.BuiltInPlugins] });
        Assert.NotNull(run);
    }

    [Fact]
    public void SmoothAndEfficientMprtRefuseEachOthersOptions()
    {
        var errors = Errors("""
              - { id: s, uses: mprt, with: { of: sal, bins: 5, max_bins: 50 } }
              - { id: e, uses: mprt, with: { of: sal, variant: efficient, samples: 3, noise_magnitude: 0.3, micro_batch: 4 } }
              - { id: e2, uses: mprt, with: { of: sal, variant: efficient, bins_rule: scott, bins: 5 } }
              - { id: e3, uses: mprt, with: { of: sal, variant: efficient, min_bins: 3 } }
              - { id: r, uses: sanity-randomisation, with: { of: sal, reset_seed: 7 } }
            """);
        Assert.Equal(
        [
            "step 's' (mprt): option 'bins' applies to variant efficient",
            "step 's' (mprt): option 'max_bins' applies to variant efficient with bins_rule",
            "step 'e' (mprt): option 'samples' applies to variant smooth",
            "step 'e' (mprt): option 'noise_magnitude' applies to variant smooth",
            "step 'e' (mprt): option 'micro_batch' applies to variant smooth",
            "step 'e2' (mprt): option 'bins' applies to complexity: discrete-entropy without bins_rule",
            "step 'e3' (mprt): option 'min_bins' applies to bins_rule",
            "step 'r' (sanity-randomisation): option 'reset_seed' applies to randomise: reset",
        ], errors.Select(e => e[e.IndexOf("step '", StringComparison.Ordinal)..]));
    }

    [Fact]
    public void CompanionOptionsNeedTheOptionTheyQualify()
    {
        // Options read only with another option's value (toolkit OptionRules): set without it they did nothing.
        var file = Path.Combine(Env.TempDir(), "baseline.npy");
        File.WriteAllBytes(file, Loupe.Abstractions.Toolkit.Npy.Encode(new NdArray(new float[28 * 28], [1, 28, 28])));
        var errors = Errors($$"""
              - { id: pf, uses: pixel-flipping, with: { of: sal, perturb_std: 0.5, uniform_high: 3, lower_bound: 0.4 } }
              - { id: pf2, uses: pixel-flipping, with: { of: sal, baseline: uniform-noise, lower_bound: 0.4, upper_bound: 0.6 } }
              - { id: ll, uses: local-lipschitz, with: { of: sal, radius: 0.5 } }
              - { id: as, uses: avg-sensitivity, with: { of: sal, sigma: 0.5 } }
              - { id: as2, uses: avg-sensitivity, with: { of: sal, noise: gaussian, sigma: 0.5 } }
              - { id: sn, uses: sensitivity-n, with: { of: sal, max_fraction: 0.5 } }
              - { id: snq, uses: sensitivity-n, with: { of: sal, score: quantus, fractions: [0.1] } }
              - { id: inf, uses: infidelity, with: { of: sal, baseline: max } }
              - { id: infb, uses: infidelity, with: { of: sal, perturbation: blocks, sigma: 0.3 } }
              - { id: c, uses: completeness, with: { of: sal, perturb_mean: 0.1 } }
              - { id: ig, uses: integrated-gradients, with: { steps: 4, blur_sigma: 3 } }
              - { id: igf, uses: integrated-gradients, with: { steps: 4, baseline: mean, baseline_file: {{Env.Yaml(file)}} } }
              - { id: igb, uses: integrated-gradients, with: { steps: 4, baseline: blur, blur_sigma: 3 } }
              - { id: gs, uses: gradient-shap, with: { baseline: mean, baselines_file: {{Env.Yaml(file)}} } }
            """);
        string[] want =
        [
            "step 'pf' (pixel-flipping): option 'perturb_std' applies to baseline: gaussian-noise",
            "step 'pf' (pixel-flipping): option 'lower_bound' applies to baseline: uniform-noise",
            "step 'pf' (pixel-flipping): option 'uniform_high' applies to baseline: uniform, uniform-input or uniform-step",
            "step 'll' (local-lipschitz): option 'radius' applies to noise: uniform",
            "step 'as' (avg-sensitivity): option 'sigma' applies to noise: gaussian",
            "step 'sn' (sensitivity-n): option 'max_fraction' applies to score: quantus",
            "step 'snq' (sensitivity-n): option 'fractions' applies to score: paper (random subsets of each size)",
            "step 'inf' (infidelity): option 'baseline' applies to perturbation: blocks",
            "step 'infb' (infidelity): option 'sigma' applies to perturbation: gaussian",
            "step 'c' (completeness): option 'perturb_mean' applies to baseline: gaussian-noise",
            "step 'ig' (integrated-gradients): option 'blur_sigma' applies to baseline: blur",
            "step 'igf' (integrated-gradients): give either a named 'baseline' or 'baseline_file', not both: its baselines replace the named one",
            "step 'gs' (gradient-shap): option 'baseline' applies to a single baseline (baselines_file's baselines replace it)",
        ];
        Assert.Equal(want.Order(StringComparer.Ordinal), errors.Select(e => e[e.IndexOf("step '", StringComparison.Ordinal)..]).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void CompanionOptionsOfOtherTechniquesNeedTheirOption()
    {
        var errors = Errors("""
              - { id: fa, uses: feature-ablation, with: { n_segments: 20 } }
              - { id: fa2, uses: feature-ablation, with: { segments: superpixels, cell: 7, n_segments: 20 } }
              - { id: ks, uses: kernel-shap, with: { samples: 20, compactness: 3 } }
              - { id: lrp, uses: lrp, with: { low: -2, gamma: 0.5 } }
              - { id: lrp2, uses: lrp, with: { composite: epsilon-gamma-box, low: -2, high: 2, gamma: 0.5 } }
              - { id: lrp3, uses: lrp, with: { composite: epsilon-gamma-box, first_rule: flat, low: -2 } }
              - { id: am, uses: activation-max, with: { objective: "relu3:1", cppn_layers: 3, blur_sigma: 1, l2_center: 0.3, steps: 4 } }
              - { id: am2, uses: activation-max, with: { objective: "relu3:1", parameterization: cppn, decorrelate: false, steps: 4 } }
              - { id: rl, uses: random-logit, with: { of: sal, quantus_batch_size: 8 } }
              - { id: dff, uses: deep-feature-factorization, with: { layer: relu3, top: 3 } }
              - { id: co, uses: continuity, with: { of: sal, sweep: quantus, shift: 2 } }
              - { id: del, uses: deletion, with: { of: sal, blur_sigma: 3 } }
              - { id: ins, uses: insertion, with: { of: sal, blur_sigma: 3 } }
              - { id: nt, uses: noise-tunnel, with: { inner: saliency, samples: 4, noise_level: 0.3, stdevs: 0.2 } }
              - { id: cd, uses: concept-discovery, with: { layer: relu2, designs: 8 } }
            """);
        string[] want =
        [
            "step 'fa' (feature-ablation): option 'n_segments' applies to segments: superpixels",
            "step 'fa2' (feature-ablation): option 'cell' applies to segments: grid",
            "step 'ks' (kernel-shap): option 'compactness' applies to segments: superpixels",
            "step 'lrp' (lrp): lrp: option 'low' applies to the z-box rule (composite epsilon-gamma-box, rule:, first_rule: or rules:)",
            "step 'lrp' (lrp): lrp: option 'gamma' applies to the gamma rule (composite epsilon-gamma-box, rule:, first_rule:, conv_rule:, dense_rule:, or rules: without their own gamma)",
            "step 'lrp3' (lrp): lrp: option 'low' applies to the z-box rule (composite epsilon-gamma-box, rule:, first_rule: or rules:)",
            "step 'am' (activation-max): option 'cppn_layers' applies to parameterization: cppn",
            "step 'am' (activation-max): option 'blur_sigma' applies to blur_every above 0",
            "step 'am' (activation-max): option 'l2_center' applies to l2 above 0",
            "step 'am2' (activation-max): option 'decorrelate' applies to parameterization: pixels or fft (a cppn's image is a function of its weights, initialised its own way)",
            "step 'rl' (random-logit): option 'quantus_batch_size' applies to draw: quantus",
            "step 'dff' (deep-feature-factorization): option 'top' applies to a 'head' (the classes shown per concept)",
            "step 'co' (continuity): option 'shift' applies to sweep: right (Quantus's sweep spreads its steps over the width)",
            "step 'del' (deletion): option 'blur_sigma' applies to the blur baseline (fill: blur, insertion's default)",
            "step 'nt' (noise-tunnel): option 'noise_level' applies to the noise without 'stdevs' (an absolute σ replaces the relative one)",
            "step 'cd' (concept-discovery): option 'designs' applies to importance: sobol",
        ];
        Assert.Equal(want.Order(StringComparer.Ordinal), errors.Select(e => e[e.IndexOf("step '", StringComparison.Ordinal)..]).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void DescribeAndTheSchemaListWhatAMetricReads()
    {
        using var registry = Registry();
        var road = registry.Find(ComponentKind.Analysis, "road")!;
        Assert.Equal(["quantus_batch_size", "order", "percentages", "noise", "abs", "normalise", "softmax", "micro_batch", "normalise_over", "of", "expect"],
            Inspector.Options(road.OptionsType, road.ImplementationType).Select(o => o.Name));
        Assert.Contains(Inspector.Options(road.OptionsType), o => o.Name == "patch");   // the record itself has it

        var schema = PipelineSchema.Generate(registry.Components);
        var props = schema["$defs"]!["analysis.road"]!["properties"]!.AsObject();
        Assert.True(props.ContainsKey("percentages") && !props.ContainsKey("patch") && !props.ContainsKey("baseline"), props.ToJsonString());
        var rp = schema["$defs"]!["analysis.region-perturbation"]!["properties"]!.AsObject();
        Assert.True(rp.ContainsKey("patch") && rp.ContainsKey("baseline") && !rp.ContainsKey("percentages"), rp.ToJsonString());
    }

    [Fact]
    public void EveryOptionOfASharedRecordIsReadBySomeComponent()
    {
        // A misspelt name in [ReadsOptions] throws (naming the plugin type); an option no member reads would be
        // refused everywhere.
        using var registry = Registry();
        foreach (var family in registry.Components.GroupBy(c => (c.Kind, c.OptionsType)))
        {
            var read = family.SelectMany(OptionReaders.Read).ToHashSet();
            var orphans = OptionsBinder.Properties(family.Key.OptionsType).Select(p => p.Name).Where(p => !read.Contains(p)).ToList();
            Assert.True(orphans.Count == 0, $"{family.Key.OptionsType.Name} ({string.Join(", ", family.Select(c => c.Id))}): no component reads {string.Join(", ", orphans)}");
        }
        Assert.Throws<InvalidOperationException>(() => ReadsOptionsAttribute.Of(typeof(Misspelt), typeof(Loupe.Analysis.Evaluation.FaithfulnessOptions)));
    }

    [ReadsOptions("Pach")]
    sealed class Misspelt;
}
