using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>The attribution and CAM family against PyTorch implementations of the published formulas
/// (tests/fixtures/make_attribution_fixtures.py) and closed-form cases.</summary>
public class AttributionTests
{
    // Gradient × input, integrated gradients, guided backprop, deconvnet, the CAM family and feature ablation on the
    // fixture CNN against make_attribution_fixtures.py (and their tensor hygiene) run through the in-process API:
    // Loupe.Library.Tests/TechniqueApiTests. Here: residual networks, closed forms and pipeline behaviour.

    [Theory]
    [InlineData(ReluRule.Guided, "attr_r18_guided.npy", false)]
    [InlineData(ReluRule.Deconvnet, "attr_r18_deconv.npy", false)]
    [InlineData(ReluRule.Guided, "attr_r18_guided.npy", true)]
    [InlineData(ReluRule.Deconvnet, "attr_r18_deconv.npy", true)]
    public void ReluRulesReachTheReluInsideResidualBlocks(ReluRule rule, string fixture, bool foldBatchNorm)
    {
        // torchvision's BasicBlock ends with a functional ReLU after the in-place residual add; PyTorch's reference
        // replaces every nn.ReLU module (which torchvision also uses there), Loupe hooks the blocks (with batch norms
        // folded, the hook on each block's last batch norm sits on its placeholder).
        using var model = BatchNormFoldingTests.HashResNet18(foldBatchNorm);
        using var scope = NewDisposeScope();
        var x = Npy.Read(TestEnv.Fixture("arch_input_64.npy")).ToTensor().requires_grad_(true);
        Tensor g;
        using (((IModelInterventions)model).OverrideRelu(rule))
        {
            var y = model.Forward(x);
            var top1 = y.detach().argmax(1);
            g = CheckedOps.Grad([y.gather(1, top1.unsqueeze(1)).sum()], [x])[0];
        }
        TechniqueTests.Close(g.ToArray<float>(), fixture, 1e-4);
        // The override is gone afterwards: plain gradients differ from guided ones.
        var y2 = model.Forward(x);
        var plain = CheckedOps.Grad([y2.gather(1, y2.detach().argmax(1).unsqueeze(1)).sum()], [x])[0];
        Assert.True(TestEnv.RelL2(plain.ToArray<float>(), g.ToArray<float>()) > 1e-2);
    }

    [Fact]
    public void ReluRulesAtASingleReluAreTheClosedForm()
    {
        // F(x) = Σ_i w_i relu(x_i): gradient w_i [x_i > 0]; guided w_i [x_i > 0][w_i > 0]; deconvnet relu(w_i).
        var x = tensor(new float[] { 1.5f, -0.5f, 2f, -1f, 0.3f, -2f });
        var w = tensor(new float[] { 0.7f, 0.9f, -1.2f, -0.4f, 0.2f, 0.0f });
        var seq = nn.Sequential(("relu", nn.ReLU()), ("fc", nn.Linear(6, 1, hasBias: false)));
        using (no_grad()) ((nn.Module<Tensor, Tensor>)seq.named_children().Last().module).parameters().First().copy_(w.view(1, 6));
        using var model = new TorchModel(seq, new InputSpec(1, 1, 6, [0f], [1f]), null);
        float[] Grad(ReluRule? rule)
        {
            using var h = rule is { } r ? ((IModelInterventions)model).OverrideRelu(r) : null;
            var xi = x.view(1, 6).detach().requires_grad_(true);
            return CheckedOps.Grad([model.Forward(xi).sum()], [xi])[0].ToArray<float>();
        }
        Assert.Equal(new float[] { 0.7f, 0, -1.2f, 0, 0.2f, 0 }, Grad(null));
        Assert.Equal(new float[] { 0.7f, 0, 0, 0, 0.2f, 0 }, Grad(ReluRule.Guided));
        Assert.Equal(new float[] { 0.7f, 0.9f, 0, 0, 0.2f, 0 }, Grad(ReluRule.Deconvnet));
    }

    [Fact]
    public void IntegratedGradientsIsCompleteWithinOnePercentAt50Steps()
    {
        var dir = TestEnv.TempDir();
        var r = TestEnv.Run(TestEnv.Pipeline($"""
            version: 1
            {TestEnv.DemoModel}
            data:
              uses: idx
              with: {"{"} images: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}, limit: 16 {"}"}
            steps:
              - {"{"} id: ig, uses: integrated-gradients, with: {"{"} steps: 50, baseline: black {"}"} {"}"}
            """, dir));
        Assert.Equal(0, r.ExitCode);
        var metrics = r.Manifest!["steps"]![0]!["metrics"]!;
        Assert.True(metrics["completeness_error_mean_relative"]!.GetValue<double>() < 0.01, metrics.ToJsonString());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "ig", "completeness.json")));
    }

    [Fact]
    public void GaussLegendreNodesAreExact()
    {
        // Integrates polynomials of degree ≤ 2n − 1 exactly on [0, 1].
        var (a, w) = Loupe.Analysis.Decisions.IntegratedGradients.Rule(Loupe.Analysis.Decisions.IntegrationRule.GaussLegendre, 5);
        for (int deg = 0; deg <= 9; deg++)
            Assert.Equal(1.0 / (deg + 1), a.Zip(w).Sum(p => p.Second * Math.Pow(p.First, deg)), 1e-12);
        Assert.Equal(1.0, w.Sum(), 1e-12);
    }

    /// <summary>The neuron target takes one index per dimension after the batch (Captum's neuron_selector): on the dense
    /// output layer <c>fc:3</c> is the class-3 logit, so saliency for it is saliency for class 3; on a ViT's token layer
    /// (N×17×16) <c>layer:5:3</c> is token 5's feature 3, whose integrated gradients sum to its change from the zero
    /// input; a wrong number of indices is an error naming the layer's shape.</summary>
    [Fact]
    public void NeuronTargetsIndexEveryDimensionAfterTheBatch()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: ne, uses: saliency, with: { abs: false }, target: { neuron: "fc:3" } }
              - { id: cl, uses: saliency, with: { abs: false }, target: { class: 3 } }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var ne = TechniqueTests.Stack(r, "ne", "saliency");
        Assert.Equal(TechniqueTests.Stack(r, "cl", "saliency"), ne);
        Assert.Contains(ne, v => v != 0);
        var onnx = (string name) => TestEnv.Yaml(Path.Combine(TestEnv.Fixtures, "onnx", name));
        const string Ln1 = "/encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0";
        var vit = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: onnx, with: { path: {{onnx("families/vit.onnx")}} } }
            data: { uses: npy, with: { path: {{onnx("vit_input.npy")}} } }
            steps:
              - { id: ig, uses: integrated-gradients, with: { steps: 64 }, target: { neuron: "{{Ln1}}:5:3" } }
              - { id: ab, uses: feature-ablation, with: { cell: 32 }, target: { neuron: "{{Ln1}}:5:3" } }
            """));
        Assert.True(vit.ExitCode == 0, string.Join("\n", vit.Errors));
        for (int i = 0; i < 2; i++)
        {
            double sum = TestEnv.Artifact(vit, $"ig/{i:D5}.integrated-gradients.npy").Data.Sum(v => (double)v);
            double gap = TestEnv.Artifact(vit, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            Assert.True(Math.Abs(gap) > 1e-3 && Math.Abs(sum - gap) <= 0.02 * Math.Abs(gap), $"input {i}: Σ IG {sum} vs neuron(x) − neuron(0) {gap}");
        }
        // Indices that do not fit the layer are refused when the pipeline is validated (the layer's shape probed), all
        // at once, each at its target: too few, past the end, a channel past the last.
        var bad = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: ne, uses: saliency, target: { neuron: "relu3:2:3" } }
              - { id: far, uses: saliency, target: { neuron: "relu3:2:3:7" } }
              - { id: ch, uses: saliency, target: { channel: "relu3:128" } }
              - { id: ok, uses: saliency, target: { neuron: "relu3:127:6:6" } }
            """));
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Null(bad.Manifest);   // nothing ran
        Assert.Equal(3, bad.Errors.Count);
        Assert.Contains(bad.Errors, e => e.Message.Contains("step 'ne' target: target 'relu3:2:3': layer 'relu3' has shape (N×128×7×7): give 3 indices, one per dimension after the batch"));
        Assert.Contains(bad.Errors, e => e.Message.Contains("step 'far' target: target 'relu3:2:3:7': position (2, 3, 7) is outside layer 'relu3' of shape (N×128×7×7)"));
        Assert.Contains(bad.Errors, e => e.Message.Contains("step 'ch' target: target 'relu3:128': layer 'relu3' has 128 channels"));
        Assert.All(bad.Errors, e => Assert.True(e.Line > 0 && e.File.EndsWith(".yaml"), e.ToString()));   // each at its place in the file
    }

    [Fact]
    public void NoiseTunnelAndTopKAndUnitTargets()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: sg, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 8, noise_level: 0.0 } }
              - { id: vg, uses: noise-tunnel, with: { inner: { uses: saliency }, samples: 6, type: vargrad } }
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: top, uses: grad-cam, with: { layer: relu3 }, target: { top-k: 2 } }
              - { id: ch, uses: saliency, target: { channel: "relu3:2" } }
              - { id: ne, uses: saliency, target: { neuron: "relu3:2:3:3" } }
            """));
        Assert.True(r.ExitCode == 0, r.Manifest?.ToJsonString());
        // With zero noise, SmoothGrad is the plain gradient.
        Assert.Equal(TechniqueTests.Stack(r, "sal", "saliency").Select(v => (double)v), TechniqueTests.Stack(r, "sg", "noise-tunnel").Select(v => (double)v), new ToleranceComparer(1e-6));
        Assert.All(TechniqueTests.Stack(r, "vg", "noise-tunnel"), v => Assert.True(v >= -1e-9));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "top", "00000.grad-cam.top2.npy")));
        var labels = r.Manifest!["artifacts"]!.AsArray().Where(a => a!["step"]!.GetValue<string>() == "top" && a["input"]?.GetValue<string>() == "00000").Select(a => a!["target"]!.GetValue<string>()).Distinct().ToList();
        Assert.Contains(labels, l => l.StartsWith("top-1: class 6"));
        Assert.Contains(labels, l => l.StartsWith("top-2: class"));
        var channel = TestEnv.Artifact(r, "ch/00000.saliency.npy").Data;
        var neuron = TestEnv.Artifact(r, "ne/00000.saliency.npy").Data;
        Assert.Contains(channel, v => v > 0);
        Assert.Contains(neuron, v => v > 0);
        Assert.NotEqual(channel, neuron);
        // A neuron's gradient is confined to its receptive field: (3,3) at relu3 sees input rows/cols 5..22
        // (conv3 → pool2 → conv2 → pool1 → conv1: 2..4 → 4..9 → 3..10 → 6..21 → 5..22).
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++)
                if (y < 5 || y > 22 || x < 5 || x > 22) Assert.Equal(0f, neuron[y * 28 + x]);
    }

    /// <summary>A forward-only backend (as onnx-runtime will be): the validator must refuse gradient techniques on it.</summary>
    public sealed class ForwardOnlyAdapter : ModelAdapter<TorchVisionOptions>
    {
        public override IModel Load(TorchVisionOptions options, ModelLoadContext context) =>
            new ForwardOnly(new TorchVisionAdapter().Load(options, context));
        sealed class ForwardOnly(IModel inner) : IModel
        {
            public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.LayerActivations;
            public InputSpec DefaultInput => inner.DefaultInput;
            public IReadOnlyList<string>? DefaultLabels => inner.DefaultLabels;
            public IReadOnlyList<LayerInfo> Layers => inner.Layers;
            public Tensor Forward(Tensor input) { using var _ = no_grad(); return inner.Forward(input); }
            public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => inner.Capture(layers, false);
            public Tensor? GetParameter(string name) => null;
            public IReadOnlyList<string> ParameterNames => [];
            public void Dispose() => inner.Dispose();
        }
    }

    sealed class ForwardOnlyRegistrar : IPluginRegistrar
    {
        public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) =>
            services.AddLoupeModel<ForwardOnlyAdapter>("forward-only-test", "test backend without gradients");
    }

    [Fact]
    public void ValidationRefusesWhatCannotWork()
    {
        var dir = TestEnv.TempDir();
        string Yaml(string steps) => $"""
            version: 1
            model:
              uses: forward-only-test
              with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))} {"}"}
            data:
              uses: npy
              with: {"{"} path: {TestEnv.Yaml(TestEnv.Fixture("fashion_input.npy"))} {"}"}
            steps:
            {steps}
            """;
        Loupe.Core.RunResult Run(string steps) => Loupe.Core.PipelineRunner.Run(new Loupe.Core.RunRequest(TestEnv.Pipeline(Yaml(steps), TestEnv.TempDir()))
        {
            PluginDirectories = [TestEnv.PluginDirectory], Registrars = [new ForwardOnlyRegistrar()], OutDir = Path.Combine(TestEnv.TempDir(), "out"),
        });
        var grad = Run("  - { id: s, uses: saliency }\n  - { id: g, uses: grad-cam, with: { layer: relu3 } }\n  - { id: n, uses: noise-tunnel, with: { inner: { uses: integrated-gradients } } }\n");
        Assert.Equal(2, grad.ExitCode);
        Assert.Equal(3, grad.Errors.Count(e => e.Message.Contains("needs gradients") && e.Message.Contains("'forward-only-test'") && e.Message.Contains("differentiable backend")));
        // Forward-only techniques run on it.
        var ok = Run("  - { id: o, uses: occlusion, with: { window: 7 } }\n  - { id: f, uses: feature-ablation, with: { cell: 14 } }\n  - { id: e, uses: eigen-cam, with: { layer: relu3 } }\n  - { id: r, uses: rise, with: { masks: 50 } }\n  - { id: a, uses: activations, with: { layer: relu2, top: 2 } }\n");
        Assert.True(ok.ExitCode == 0, string.Join("\n", ok.Errors) + ok.Manifest?.ToJsonString());

        var inner = TestEnv.Run(TestEnv.FixturePipeline("  - { id: n, uses: noise-tunnel, with: { inner: { uses: filters, with: { layer: conv1 } } } }\n"));
        Assert.Contains(inner.Errors, e => e.Message.Contains("inner step 'filters' is not an attribution method"));
        var unknown = TestEnv.Run(TestEnv.FixturePipeline("  - { id: n, uses: noise-tunnel, with: { inner: { uses: salency } } }\n"));
        Assert.Contains(unknown.Errors, e => e.Message.Contains("unknown analysis 'salency'") && e.Message.Contains("did you mean 'saliency'"));
        var noLayer = TestEnv.Run(TestEnv.FixturePipeline("  - { id: c, uses: grad-cam }\n"));
        Assert.Contains(noLayer.Errors, e => e.Message.Contains("give a 'layer'"));
        var cam = TestEnv.Run(TestEnv.FixturePipeline("  - { id: c, uses: cam, with: { layer: relu3, head: conv9 } }\n"));
        Assert.Contains(cam.Errors, e => e.Message.Contains("'conv9' has no 2-D weight"));
    }

    [Fact]
    public void SimilarToScoresTheCosineSimilarityOfEmbeddings()
    {
        using var model = ModelTests.Load("fashion-cnn", Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"));
        var pngs = Directory.GetFiles(Path.Combine(TestEnv.Samples, "images", "fashion"), "*.png").Order(StringComparer.Ordinal).ToArray();
        var ctx = new TargetContext([], 10, model.Layers.Select(l => l.Name).ToList()) { Model = model, Input = model.DefaultInput };
        var target = new Loupe.Targets.SimilarToTargetFactory().Create(new Loupe.Targets.SimilarToOptions { Image = pngs[0], Layer = "gap" }, ctx);
        using var src = new Loupe.Data.ImageFolderAdapter().Open(new Loupe.Data.ImageFolderOptions { Path = Path.GetDirectoryName(pngs[0])! }, new DataOpenContext("/", model.DefaultInput));
        var batch = src.Read(model.DefaultInput, 32, default).Single();
        using var scope = NewDisposeScope();
        using var cap = model.Capture(target.RequiredLayers, false);
        var output = model.Forward(model.DefaultInput.Normalize(batch.Pixels));
        var ti = new TargetInput(output, l => cap[l]);
        var scores = target.Scores(ti, target.Select(ti)).ToArray<float>();
        Assert.Equal(1.0, scores[0], 1e-5);                       // the reference itself
        Assert.All(scores.Skip(1), v => Assert.True(v < 0.9999f && v > -1.0001f));
        Assert.Contains("similarity to", target.Describe());
        batch.Dispose();
        Assert.Throws<LoupeException>(() => new Loupe.Targets.SimilarToTargetFactory().Create(new Loupe.Targets.SimilarToOptions { Image = pngs[0], Layer = "gapp" }, ctx));
    }

    [Fact]
    public void SlicSuperpixelsFollowColourEdges()
    {
        using var scope = NewDisposeScope();
        // Left half dark, right half bright, with a little noise: no segment may straddle the edge at x = 16.
        torch.manual_seed(3);
        var img = cat([full(3, 32, 16, 0.1f), full(3, 32, 16, 0.9f)], 2) + rand(3, 32, 32) * 0.02f;
        var labels = Loupe.Abstractions.Slic.Segment(img, 16, 10);
        var l = labels.ToArray<long>();
        var k = l.Max() + 1;
        Assert.InRange(k, 8, 24);
        for (long seg = 0; seg < k; seg++)
        {
            var xs = Enumerable.Range(0, l.Length).Where(i => l[i] == seg).Select(i => i % 32).ToList();
            Assert.NotEmpty(xs);
            Assert.True(xs.All(x => x < 16) || xs.All(x => x >= 16), $"segment {seg} crosses the colour edge");
        }
    }

    [Fact]
    public void SuperpixelAblationGivesEachSegmentItsScoreDrop()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("  - { id: sp, uses: feature-ablation, with: { segments: superpixels, n_segments: 12, compactness: 5 } }\n"));
        Assert.True(r.ExitCode == 0, r.Manifest?.ToJsonString());
        var map = TestEnv.Artifact(r, "sp/00000.feature-ablation.npy").Data;
        // Independent check for one segment of input 0: fill it with 0 (normalised) and take the drop of the top-1 logit.
        using var model = ModelTests.Load("fashion-cnn", TestEnv.Fixture("fashion_cnn_seed0.pt"));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = Npy.Read(TestEnv.Fixture("fashion_input.npy")).ToTensor()[0].unsqueeze(0);
        var spec = model.DefaultInput;
        var labels = Loupe.Abstractions.Slic.Segment(spec.Denormalize(x)[0], 12, 5).flatten().ToArray<long>();
        var y = model.Forward(x);
        var cls = y.argmax(1).item<long>();
        foreach (var seg in labels.Distinct().Take(3))
        {
            var mask = tensor(labels.Select(v => v == seg ? 1f : 0f).ToArray()).view(1, 1, 28, 28);
            var drop = y[0, cls].item<float>() - model.Forward(x * (1 - mask))[0, cls].item<float>();
            var idx = Array.IndexOf(labels, seg);
            Assert.Equal(drop, map[idx], 1e-4);
            Assert.All(Enumerable.Range(0, labels.Length).Where(i => labels[i] == seg), i => Assert.Equal(map[idx], map[i]));
        }
    }

    sealed class ToleranceComparer(double tol) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(double v) => 0;
    }
}
