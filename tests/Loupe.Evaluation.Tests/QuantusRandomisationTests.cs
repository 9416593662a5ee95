using System.Text.Json.Nodes;
using Loupe.Analysis.Evaluation;

namespace Loupe.Evaluation.Tests;

/// <summary>Quantus 0.6.0's parameter randomisation run itself on the demo CNN (tests/fixtures/make_quantus_fixtures.py,
/// <c>mprt_cases</c>), the explanation being the signed input gradient that Quantus recomputes on every randomised
/// model: with modules re-initialised as PyTorch's reset_parameters after torch.manual_seed(seed + 1) (Loupe's
/// <c>randomise: reset</c>, the default of <c>mprt</c>), Loupe gives Quantus's curves point by point where no noise is
/// drawn — MPRT (cascading from the top: <c>sanity-randomisation</c>), sMPRT with one sample, eMPRT — and, where
/// numpy's noise is drawn (sMPRT with eight samples, with and without a_batch), curves within the spread of two Quantus
/// seeds.</summary>
public partial class QuantusReferenceTests
{
    static string[] Names(string key) => Expected[key]!.AsArray().Select(n => n!.GetValue<string>()).ToArray();

    static double[] PointMeans(double[][] rows, int from) =>
        Enumerable.Range(from, rows[0].Length - from).Select(k => rows.Average(row => row[k])).ToArray();

    [Fact]
    public void ParameterRandomisationGivesQuantusNumbers()
    {
        var r = OnDemoCnn("inputs.npy", 8, $$"""
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: mprt, uses: sanity-randomisation, with: { of: sal, randomise: reset } }
              - { id: smprt1, uses: mprt, with: { of: sal, samples: 1 } }
              - { id: emprt, uses: mprt, with: { of: sal, variant: efficient, per_layer: false } }
              - { id: emprt_fd, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, bins_rule: freedman-diaconis, min_bins: 2 } }
              - { id: emprt_scott, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, bins_rule: scott, min_bins: 2 } }
              - { id: emprt_sturges, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, bins_rule: sturges } }
              - { id: given, uses: mprt, with: { of: sal, samples: 8, reference: given } }
              - { id: smoothed, uses: mprt, with: { of: sal, samples: 8 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();

        // The modules, in Quantus's order (its named_modules with reset_parameters; Loupe's execution order).
        var modules = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "mprt", "randomisation.json")))!["layers"]!.AsArray()
            .Select(l => l!["module"]!.GetValue<string>()).ToArray();
        Assert.Equal(Names("mprt_reset_layers").Skip(1), modules);
        var smoothModules = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "smprt1", "mprt_layers.json")))!["modules"]!.AsArray()
            .Select(l => l!.GetValue<string>()).ToArray();
        Assert.Equal(Names("smprt_reset_1_layers").Skip(1), smoothModules);

        // MPRT: Spearman of |gradient| after each module, top first (Quantus's 'original' point compares the map with
        // itself; Loupe's curve starts at the first module). Float32 gradients of two libtorch versions: a rank moves
        // at most.
        m.Rows("MPRT (reset, top-down)", WantRows("mprt_reset").Select(row => row[1..]).ToArray(), Curve(r, "mprt/spearman.npy"), 1e-4);
        // sMPRT with one sample (no noise), bottom-up: every point, the original included.
        m.Rows("sMPRT, one sample", WantRows("smprt_reset_1"), Curve(r, "smprt1/mprt_curve.npy"), 1e-4);
        // eMPRT, 100 bins, skip_layers (the fully randomised model only): the relative rise of the histogram entropy.
        m.Close("eMPRT", Want("emprt_reset"), Values(r, "emprt", "mprt"), 1e-3);
        // eMPRT with the bins by Quantus's rules, computed from every map of the run: the same count, the same score.
        foreach (var (step, key) in new[] { ("emprt_fd", "emprt_fd"), ("emprt_scott", "emprt_scott"), ("emprt_sturges", "emprt_sturges") })
        {
            var bins = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "mprt.json")))!["options"]!["bins"]!.GetValue<int>();
            m.Close($"eMPRT bins ({key})", [Expected[key + "_bins"]!.GetValue<int>()], [bins], 0);
            m.Close($"eMPRT ({key})", Want(key), Values(r, step, "mprt"), 1e-3);
        }

        // sMPRT with eight noisy copies: the points' means over the inputs within the spread of two seeds. Given: the
        // step's maps against each model's smoothed maps (Quantus with a_batch), the original point included; smoothed:
        // the randomised points only (Quantus's own original point compares two smoothings of its own).
        m.Spread("sMPRT, a_batch given", PointMeans(WantRows("smprt_given"), 0), PointMeans(WantRows("smprt_given_seed1"), 0),
            PointMeans(Curve(r, "given/mprt_curve.npy"), 0), 0, 0.05);
        m.Spread("sMPRT, smoothed", PointMeans(WantRows("smprt_smoothed"), 1), PointMeans(WantRows("smprt_smoothed_seed1"), 1),
            PointMeans(Curve(r, "smoothed/mprt_curve.npy"), 1), 0, 0.05);
        m.Check();
    }

    /// <summary>The ONNX export of torchvision's ViT (samples/models/fashion-vit) lists a tensor under its initializer's
    /// name, its node's and its output's: each is randomised once, in the module PyTorch names it by where there is
    /// one — the MLP layers' and attention's in_proj weights, which the export writes as anonymous MatMul constants, too
    /// (the onnx backend lists them beside their modules' biases). Reset leaves what Quantus's leaves (the class token,
    /// the position embedding and attention's in_proj, whose modules have no reset_parameters), without a warning; the
    /// MLP layers, attention's out_proj (a Gemm node) and the norm layers are reset.</summary>
    [Fact]
    public void OnnxExportsRandomiseEachTensorOnce()
    {
        var r = Env.Run($$"""
            version: 1
            model: { uses: onnx, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "samples", "models", "fashion-vit", "fashion-vit.onnx"))}}, mean: [0.2860], std: [0.3530] } }
            data: { uses: npy, with: { path: {{Fixture("inputs.npy")}} } }
            settings: { batch_size: 8 }
            steps:
              - { id: sal, uses: saliency }
              - { id: reset, uses: sanity-randomisation, with: { of: sal, randomise: reset } }
              - { id: normal, uses: sanity-randomisation, with: { of: sal } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        string[] Modules(string step) => JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "randomisation.json")))!["layers"]!.AsArray()
            .Select(l => l!["module"]!.GetValue<string>()).ToArray();
        string[] Block(int i, bool attention) =>
        [
            $"vit.encoder.layers.encoder_layer_{i}.mlp.3",
            $"vit.encoder.layers.encoder_layer_{i}.mlp.0",
            $"vit.encoder.layers.encoder_layer_{i}.ln_2",
            .. attention ? new[] { $"vit.encoder.layers.encoder_layer_{i}.self_attention" } : [],
            $"/vit/encoder/layers/encoder_layer_{i}/self_attention/Gemm",
            $"vit.encoder.layers.encoder_layer_{i}.ln_1",
        ];
        Assert.Equal(["vit.heads.head", "vit.encoder.ln", .. Block(1, false), .. Block(0, false), "vit.conv_proj"], Modules("reset"));
        // Normal randomises every tensor once: the class token, the position embedding and in_proj's weight and bias
        // under their modules; nothing is left under the root.
        Assert.Equal(["vit", "vit.heads.head", "vit.encoder", "vit.encoder.ln", .. Block(1, true), .. Block(0, true), "vit.conv_proj"], Modules("normal"));
        var warnings = r.Manifest!["steps"]!.AsArray().Single(s => (string?)s!["id"] == "reset")!["warnings"]?.ToJsonString() ?? "";
        Assert.DoesNotContain("leaves", warnings);
    }

    /// <summary>Quantus's RandomLogit seeds numpy with its seed at every batch and draws the other classes there:
    /// <c>draw: quantus</c> follows those draws (batches of 3 over the 8 inputs: the third batch is short), so the
    /// scores (Spearman of the signed gradients, scale-free) are Quantus's.</summary>
    [Fact]
    public void RandomLogitDrawsQuantusClasses()
    {
        var r = OnDemoCnn("inputs.npy", 5, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: rl, uses: random-logit, with: { of: sal, draw: quantus, quantus_batch_size: 3, similarity: spearman } }
              - { id: own, uses: random-logit, with: { of: sal, similarity: spearman } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("random-logit, Quantus's draws", Want("random_logit_draws"), Values(r, "rl", "random_logit"), 1e-5);
        m.Check();
        // Loupe's own draws (per input id) are other classes: some inputs differ.
        Assert.Contains(Values(r, "own", "random_logit").Zip(Want("random_logit_draws")), p => Math.Abs(p.First - p.Second) > 1e-3);
    }

    /// <summary>Listing the modules (what validation does for mprt and sanity-randomisation) reads the parameters
    /// without unfolding a folded model's convolution–BatchNorm pairs; re-initialising a module unfolds its pair.</summary>
    [Fact]
    public void ListingModulesKeepsTheModelFolded()
    {
        using var model = (Loupe.Models.TorchSharp.TorchModel)new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
            new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn" }, new Loupe.Abstractions.ModelLoadContext(Env.RepoRoot, 0));
        Assert.Equal(3, model.FoldedBatchNorms);
        Assert.Equal(7, ModelRandomisation.Modules(model, ParameterRandomisation.Reset).Count);
        Assert.Empty(ModelRandomisation.Validate(model, ParameterRandomisation.Reset));
        Assert.Equal(3, model.FoldedBatchNorms);
        model.GetParameter("bn2.weight");
        Assert.Equal(2, model.FoldedBatchNorms);
    }

    [Fact]
    public void EfficientMprtExtraScoresAreQuantus()
    {
        // Quantus EfficientMPRT(compute_extra_scores=True), skip_layers (the last point only) and every layer.
        var r = OnDemoCnn("inputs.npy", 8, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: last, uses: mprt, with: { of: sal, variant: efficient, per_layer: false, extra_scores: true } }
              - { id: layers, uses: mprt, with: { of: sal, variant: efficient, extra_scores: true }, expect: ["mprt_fraction_model_mean > 1"] }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        foreach (var (step, key) in new[] { ("last", "emprt_extra"), ("layers", "emprt_extra_layers") })
        {
            var want = Expected[key]!.AsObject();
            var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, step, "mprt_extra.json")))!["inputs"]!.AsArray();
            m.Close($"{step}: eMPRT", want["scores"]!.AsArray().Select(Num).ToArray(), Values(r, step, "mprt"), 1e-3);
            foreach (var name in EmprtExtra.Names)
            {
                var field = name["mprt_".Length..];
                var got = inputs.Select(i => i![field] is { } v ? v.GetValue<double>() : double.NaN).ToArray();
                // The intact model's output entropy is ~1e-4 nats here: Quantus takes it from float32 probabilities
                // near 1, whose rounding moves it by up to ~1 %, and the fractions of the model's with it.
                double tol = name.Contains("model") ? 2e-2 : 1e-3;
                m.Close($"{step}: {field}", want["scores_" + field]!.AsArray().Select(Num).ToArray(), got, tol);
            }
        }
        m.Check();
        Assert.Equal(EmprtExtra.Names.Length * 2, ((JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "manifest.json")))!["steps"]!.AsArray()
            .Single(s => (string?)s!["id"] == "layers")!["metrics"]!).Count(kv => kv.Key.StartsWith("mprt_") && EmprtExtra.Names.Any(n => kv.Key.StartsWith(n + "_"))));
    }
}

