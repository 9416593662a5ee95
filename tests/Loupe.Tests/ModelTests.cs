using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>The TorchSharp backend against PyTorch (fixtures from tests/fixtures/make_fixtures.py).</summary>
public class ModelTests
{
    internal static float[] Logits(IModel model, string inputFixture)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = Npy.Read(TestEnv.Fixture(inputFixture)).ToTensor();
        return model.Forward(x).ToArray<float>();
    }

    internal static IModel Load(string arch, string? weights, int? classes = null) =>
        new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = arch, Weights = weights, NumClasses = classes }, new ModelLoadContext(TestEnv.RepoRoot, 0));

    [Theory]
    [InlineData("fashion_cnn_seed0.pt")]
    [InlineData("fashion_cnn_seed0.safetensors")]
    public void DemoCnnWeightsGiveThePyTorchLogits(string weights)
    {
        using var model = Load("fashion-cnn", TestEnv.Fixture(weights));
        var expected = Npy.Read(TestEnv.Fixture("fashion_logits.npy")).Data;
        var actual = Logits(model, "fashion_input.npy");
        Assert.True(TestEnv.RelL2(actual, expected) < 1e-5, $"rel L2 {TestEnv.RelL2(actual, expected)}");
    }

    /// <summary>Deterministic weights shared with the Python script (hash scheme, see tests/fixtures/README.md).</summary>
    internal static void SetHashWeights(IModel model) => SetHashWeights(((TorchModel)model).Module);

    /// <inheritdoc cref="SetHashWeights(IModel)"/>
    internal static void SetHashWeights(nn.Module module)
    {
        using var _ = no_grad();
        foreach (var (name, t) in module.state_dict())
        {
            if (t.dtype != ScalarType.Float32) continue;
            long n = t.numel();
            var v = new float[n];
            int L = name.Length;
            double fanIn = t.dim() >= 2 ? n / (double)t.shape[0] : 1;
            for (long j = 0; j < n; j++)
            {
                uint x = unchecked((uint)j + (uint)L * 0x9E3779B9u);
                unchecked { x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16; }
                double s = Math.Sqrt(3) * (2.0 * x / 4294967296.0 - 1);
                v[j] = (float)(name.EndsWith("running_var") ? 1 + 0.5 * s
                    : name.EndsWith("running_mean") || name.EndsWith("bias") ? 0.1 * s
                    : t.dim() == 1 ? 1 + 0.1 * s
                    : s / Math.Sqrt(fanIn));
            }
            using var src = tensor(v, t.shape);
            t.copy_(src);
        }
    }

    [Theory]
    [InlineData("resnet18")]
    [InlineData("alexnet")]
    [InlineData("vgg11")]
    [InlineData("mobilenet_v2")]
    [InlineData("googlenet")]
    [InlineData("inception_v3")]
    [InlineData("resnet50")]
    [InlineData("resnext50_32x4d")]
    [InlineData("wide_resnet50_2")]
    [InlineData("vgg11_bn")]
    [InlineData("mobilenet_v3_small")]
    [InlineData("mobilenet_v3_large")]
    [InlineData("convnext_tiny")]
    [InlineData("efficientnet_b0")]
    [InlineData("efficientnet_b5")]
    [InlineData("efficientnet_v2_s")]
    [InlineData("densenet121")]
    [InlineData("vit_b_32")]
    [InlineData("squeezenet1_0")]
    [InlineData("squeezenet1_1")]
    [InlineData("shufflenet_v2_x1_0")]
    [InlineData("mnasnet0_75")]
    [InlineData("mnasnet1_0")]
    [InlineData("regnet_y_400mf")]
    [InlineData("regnet_x_400mf")]
    [InlineData("regnet_x_8gf")]
    [InlineData("swin_t")]
    [InlineData("swin_v2_t")]
    [InlineData("maxvit_t")]
    public void TorchVisionArchitecturesMatchPyTorch(string arch)
    {
        using var model = Load(arch, null, 10);
        var keys = File.ReadAllLines(Path.Combine(TestEnv.Fixtures, "arch_keys", $"{arch}.txt")).Select(l => l.Split('\t')).ToDictionary(p => p[0], p => p[1]);
        var ours = ((TorchModel)model).Module.state_dict();
        Assert.Equal(keys.Keys.OrderBy(k => k), ours.Keys.OrderBy(k => k));
        foreach (var (k, shape) in keys) Assert.Equal(shape, string.Join(",", ours[k].shape));
        SetHashWeights(model);
        var expected = Npy.Read(TestEnv.Fixture($"arch_logits_{arch}_hash.npy")).Data;
        float[] actual;
        if (arch.StartsWith("vit", StringComparison.Ordinal) || arch is "maxvit_t" or "inception_v3")   // 224×224 (Inception: at least 75²): sin(0.37 j), as make_arch_keys.py
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var x = tensor(Enumerable.Range(0, 2 * 3 * 224 * 224).Select(j => (float)Math.Sin(0.37 * j)).ToArray(), [2, 3, 224, 224]);
            actual = model.Forward(x).ToArray<float>();
        }
        else actual = Logits(model, "arch_input_64.npy");
        Assert.True(TestEnv.RelL2(actual, expected) < 1e-4, $"{arch}: rel L2 {TestEnv.RelL2(actual, expected)}");
    }

    /// <summary>GoogLeNet and Inception v3 re-normalise their input inside the model as torchvision's pretrained builders
    /// set them (transform_input): with weights given (a checkpoint of theirs) by default, or by the option, the logits
    /// are PyTorch's with transform_input=True; transform_input: false, or no weights, without it; the option on
    /// another architecture is refused.</summary>
    [Theory]
    [InlineData("googlenet", 64)]
    [InlineData("inception_v3", 224)]
    public void GoogLeNetAndInceptionTransformTheirInputAsTorchvisionsPretrainedModels(string arch, int size)
    {
        var weights = Path.Combine(TestEnv.TempDir(), arch + ".dat");
        using (var built = TorchVisionAdapter.Build(arch, 10))
        {
            SetHashWeights(built);
            built.save(weights);
        }
        float[] Run(bool? transform)
        {
            using var model = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = arch, NumClasses = 10, Weights = weights, TransformInput = transform }, new ModelLoadContext(TestEnv.Fixtures, 0));
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var x = size == 64 ? Npy.Read(TestEnv.Fixture("arch_input_64.npy")).ToTensor()
                : tensor(Enumerable.Range(0, 2 * 3 * 224 * 224).Select(j => (float)Math.Sin(0.37 * j)).ToArray(), [2, 3, 224, 224]);
            return model.Forward(x).ToArray<float>();
        }
        var transformed = Npy.Read(TestEnv.Fixture($"arch_logits_{arch}_ti_hash.npy")).Data;
        var plain = Npy.Read(TestEnv.Fixture($"arch_logits_{arch}_hash.npy")).Data;
        Assert.True(TestEnv.RelL2(Run(null), transformed) < 1e-4, $"default with weights: rel L2 {TestEnv.RelL2(Run(null), transformed)}");
        Assert.True(TestEnv.RelL2(Run(true), transformed) < 1e-4);
        Assert.True(TestEnv.RelL2(Run(false), plain) < 1e-4);
        Assert.True(TestEnv.RelL2(transformed, plain) > 1e-2, "the transform must change these logits for the test to tell");
        var e = Assert.Throws<LoupeException>(() => new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", TransformInput = true }, new ModelLoadContext(TestEnv.Fixtures, 0)));
        Assert.Contains("applies to googlenet and inception_v3", e.Message);
    }

    /// <summary>MobileNet v3's squeeze-and-excitation as torchvision's: a ReLU between its two convolutions (TorchVision
    /// for .NET builds a ReLU6 there, which clips any squeeze activation above 6 — trained checkpoints have them): with
    /// every SE's fc1 bias raised by 8 the logits still match PyTorch's.</summary>
    [Fact]
    public void MobileNetV3SqueezeExcitationIsPyTorchs()
    {
        using var model = Load("mobilenet_v3_small", null, 10);
        SetHashWeights(model);
        using (no_grad())
            foreach (var (name, t) in ((TorchModel)model).Module.state_dict().Where(p => p.Key.EndsWith(".fc1.bias", StringComparison.Ordinal)))
                t.add_(8);
        var expected = Npy.Read(TestEnv.Fixture("arch_logits_mobilenet_v3_small_se8_hash.npy")).Data;
        var actual = Logits(model, "arch_input_64.npy");
        Assert.True(TestEnv.RelL2(actual, expected) < 1e-4, $"rel L2 {TestEnv.RelL2(actual, expected)}");
    }

    /// <summary>Batches of 2+ multi-channel images run channels-last by default (layout: auto): the layers see NHWC
    /// strides, and outputs and input gradients equal the NCHW model's.</summary>
    [Fact]
    public void ChannelsLastBatchesGiveTheNchwOutputsAndGradients()
    {
        using var auto = Load("resnet18", null, 10);
        using var nchw = new TorchVisionAdapter().Load(new TorchVisionOptions { Architecture = "resnet18", NumClasses = 10, Layout = MemoryLayout.Never },
            new ModelLoadContext(TestEnv.RepoRoot, 0));
        using var scope = NewDisposeScope();
        var x = randn([3, 3, 64, 64], generator: new Generator(7));
        using (var cap = auto.Capture(["layer1"], forGradients: false))
        using (no_grad())
        {
            auto.Forward(x);
            // NHWC (channels adjacent in memory), except where oneDNN's convolutions are off (TorchNative): NCHW.
            Assert.Equal(!Loupe.Abstractions.Toolkit.TorchNative.Configure(), cap["layer1"].stride(1) == 1);
            auto.Forward(x[..1]);
            Assert.NotEqual(1, cap["layer1"].stride(1)); // a single image stays NCHW
        }
        (float[] Output, float[] Grad) Run(IModel m)
        {
            var xi = x.detach().requires_grad_(true);
            var y = m.Forward(xi);
            var g = CheckedOps.Grad([y[.., 3].sum()], [xi])[0];
            return (y.detach().contiguous().ToArray<float>(), g.contiguous().ToArray<float>());
        }
        var (ya, ga) = Run(auto);
        var (yn, gn) = Run(nchw);
        Assert.True(TestEnv.RelL2(ya, yn) < 1e-5, $"outputs differ: rel L2 {TestEnv.RelL2(ya, yn)}");
        Assert.True(TestEnv.RelL2(ga, gn) < 1e-4, $"gradients differ: rel L2 {TestEnv.RelL2(ga, gn)}");
    }

    /// <summary>RegNet on the torchvision backend runs the gradient, CAM, path and rescale methods: DeepLift's sum is
    /// F(x) − F(x′) on RegNet X (every non-linearity a ReLU module, the residual sums linear), and integrated gradients
    /// approach it; Grad-CAM at the last stage is 2×2 for a 64×64 input (stride 32). RegNet Y's squeeze-and-excitation
    /// (a product with a sigmoid) runs through the same steps.</summary>
    [Theory]
    [InlineData("regnet_x_400mf")]
    [InlineData("regnet_y_400mf")]
    public void RegNetRunsTheMethodFamilies(string arch)
    {
        var r = ShapleyFamilyTests.TorchVision(arch, """
              - { id: sal, uses: saliency }
              - { id: cam, uses: grad-cam, with: { layer: trunk_output.block4 } }
              - { id: gb, uses: guided-backprop }
              - { id: ig, uses: integrated-gradients, with: { steps: 64 } }
              - { id: dl, uses: deeplift }
              - { id: ab, uses: feature-ablation, with: { cell: 64 } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Assert.Equal([2L, 2], TestEnv.Artifact(r, "cam/00000.grad-cam-layer.npy").Shape);
        for (int i = 0; i < 2; i++)
        {
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            double dl = TestEnv.Artifact(r, $"dl/{i:D5}.deeplift.npy").Data.Sum(v => (double)v);
            double ig = TestEnv.Artifact(r, $"ig/{i:D5}.integrated-gradients.npy").Data.Sum(v => (double)v);
            Assert.True(Math.Abs(gap) > 1e-3, $"input {i}: F(x) − F(x′) = {gap}: nothing to compare");
            if (arch.StartsWith("regnet_x", StringComparison.Ordinal))
                Assert.True(Math.Abs(dl - gap) <= 1e-3 * Math.Abs(gap) + 1e-5, $"input {i}: Σ deeplift {dl} vs F(x) − F(x′) {gap}");
            Assert.True(Math.Abs(ig - gap) <= 0.1 * Math.Abs(gap) + 1e-4, $"input {i}: Σ IG {ig} vs F(x) − F(x′) {gap}");
        }
    }

    /// <summary>Swin on the torchvision backend: its channels-last stage outputs (N×h×w×C) are laid out by reshape auto
    /// for Grad-CAM (2×2 at the last stage of a 64×64 input) and the layer methods; integrated gradients sum to about
    /// F(x) − F(0) through the shifted-window attention, the masks and the padding to whole windows.</summary>
    [Theory]
    [InlineData("swin_t")]
    [InlineData("swin_v2_t")]
    public void SwinRunsTheMethodFamilies(string arch)
    {
        var r = ShapleyFamilyTests.TorchVision(arch, """
              - { id: sal, uses: saliency }
              - { id: cam, uses: grad-cam, with: { layer: features.7 } }
              - { id: lgx, uses: layer-gradient-x-activation, with: { layer: features.5 } }
              - { id: ig, uses: integrated-gradients, with: { steps: 48 } }
              - { id: ab, uses: feature-ablation, with: { cell: 64 } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Assert.Equal([2L, 2], TestEnv.Artifact(r, "cam/00000.grad-cam-layer.npy").Shape);
        Assert.Equal([4L, 4, 384], TestEnv.Artifact(r, "lgx/00000.layer-gradient-x-activation-layer.npy").Shape);
        for (int i = 0; i < 2; i++)
        {
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            double ig = TestEnv.Artifact(r, $"ig/{i:D5}.integrated-gradients.npy").Data.Sum(v => (double)v);
            Assert.True(Math.Abs(gap) > 1e-3, $"input {i}: F(x) − F(0) = {gap}: nothing to compare");
            Assert.True(Math.Abs(ig - gap) <= 0.05 * Math.Abs(gap) + 1e-4, $"input {i}: Σ IG {ig} vs F(x) − F(0) {gap}");
        }
    }

    /// <summary>MaxViT on the torchvision backend (224×224 only): saliency and Grad-CAM at the last block (7×7) run as
    /// steps on its PyTorch-checkpoint form.</summary>
    [Fact]
    public void MaxVitRunsAsAStep()
    {
        var dir = TestEnv.TempDir("loupe-maxvit");
        var weights = Path.Combine(dir, "maxvit_hash.dat");
        using (var module = TorchVisionAdapter.Build("maxvit_t", 10))
        {
            SetHashWeights(module);
            module.save(weights);
        }
        var input = Path.Combine(dir, "x.npy");
        File.WriteAllBytes(input, Npy.Encode(new NdArray(Enumerable.Range(0, 3 * 224 * 224).Select(j => (float)Math.Sin(0.37 * j)).ToArray(), [1, 3, 224, 224])));
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: maxvit_t, num_classes: 10, weights: {{TestEnv.Yaml(weights)}} } }
            data: { uses: npy, with: { path: {{TestEnv.Yaml(input)}} } }
            steps:
              - { id: sal, uses: saliency }
              - { id: cam, uses: grad-cam, with: { layer: blocks.3 } }
            """, dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Assert.Equal([7L, 7], TestEnv.Artifact(r, "cam/00000.grad-cam-layer.npy").Shape);
        Assert.Contains(TestEnv.Artifact(r, "sal/00000.saliency.npy").Data, v => v != 0);
    }

    /// <summary>The backward of the hand-written transformer modules (MaxViT's window and grid attention and MBConv,
    /// Swin's shifted windows, masks and V2 attention, ViT's attention) against central differences in float64: the
    /// gradient's component along a random direction, ∇F·δ, equals (F(x + εδ) − F(x − εδ)) / 2ε.</summary>
    [Theory]
    [InlineData("maxvit_t", 224)]
    [InlineData("swin_t", 64)]
    [InlineData("swin_v2_t", 64)]
    [InlineData("regnet_y_400mf", 64)]
    public void HandWrittenModulesHaveTheirGradients(string arch, int size)
    {
        using var module = TorchVisionAdapter.Build(arch, 10);
        SetHashWeights(module);
        module.to(ScalarType.Float64).eval();
        using var scope = NewDisposeScope();
        var gen = new Generator(7);
        var x = randn([1, 3, size, size], dtype: ScalarType.Float64, generator: gen).requires_grad_(true);
        var delta = randn([1, 3, size, size], dtype: ScalarType.Float64, generator: gen);
        var score = module.call(x)[0, 3];
        double analytic = (CheckedOps.Grad([score], [x])[0] * delta).sum().item<double>();
        const double Eps = 1e-6;   // small: a ReLU kink between x ± εδ would bend the difference (RegNet)
        double numeric;
        using (no_grad())
            numeric = (module.call(x + Eps * delta)[0, 3] - module.call(x - Eps * delta)[0, 3]).item<double>() / (2 * Eps);
        Assert.True(Math.Abs(analytic - numeric) <= 1e-5 * Math.Max(1, Math.Abs(numeric)), $"{arch}: ∇F·δ {analytic} vs central difference {numeric}");
    }

    /// <summary>A Swin file whose relative position index is not the window's (values that would pick other position
    /// biases, or index past the table) is refused at load, naming the file and the buffer.</summary>
    [Fact]
    public void SwinRefusesAForeignRelativePositionIndex()
    {
        var path = Path.Combine(TestEnv.TempDir(), "swin_bad.dat");
        using (var module = TorchVisionAdapter.Build("swin_t", 10))
        {
            using (no_grad())
                module.state_dict()["features.3.1.attn.relative_position_index"].fill_(1_000_000);
            module.save(path);
        }
        var e = Assert.Throws<LoupeException>(() => Load("swin_t", path, 10));
        Assert.Contains(path, e.Message);
        Assert.Contains("features.3.1.attn.relative_position_index", e.Message);
    }

    public static IEnumerable<object[]> ArchKeyFiles() =>
        Directory.GetFiles(Path.Combine(TestEnv.Fixtures, "arch_keys"), "*.txt").Order(StringComparer.Ordinal).Select(f => new object[] { Path.GetFileNameWithoutExtension(f) });

    /// <summary>Every supported TorchVision architecture has PyTorch's state_dict names and shapes (torchvision 0.14,
    /// tests/fixtures/make_arch_keys.py), so PyTorch checkpoints load by name.</summary>
    [Theory]
    [MemberData(nameof(ArchKeyFiles))]
    public void ArchitectureStateDictsHavePyTorchNames(string arch)
    {
        Assert.Contains(arch, TorchVisionAdapter.Architectures);
        var expected = File.ReadAllLines(TestEnv.Fixture(Path.Combine("arch_keys", arch + ".txt"))).Select(l => l.Split('\t')).ToDictionary(p => p[0], p => p[1]);
        using var module = TorchVisionAdapter.Build(arch, 10);
        var ours = module.state_dict().ToDictionary(kv => kv.Key, kv => string.Join(",", kv.Value.shape));
        Assert.Empty(expected.Keys.Except(ours.Keys));
        Assert.Empty(ours.Keys.Except(expected.Keys));
        Assert.All(expected, kv => Assert.Equal(kv.Value, ours[kv.Key]));
    }

    [Fact]
    public void TorchSharpDatWeightsRoundTrip()
    {
        var dat = Path.Combine(TestEnv.TempDir(), "fashion.dat");
        using (var model = Load("fashion-cnn", TestEnv.Fixture("fashion_cnn_seed0.safetensors")))
            ((TorchModel)model).Module.save(dat);
        using var reloaded = Load("fashion-cnn", dat);
        var expected = Npy.Read(TestEnv.Fixture("fashion_logits.npy")).Data;
        Assert.True(TestEnv.RelL2(Logits(reloaded, "fashion_input.npy"), expected) < 1e-5);
    }

    [Fact]
    public void WeightsForAnotherArchitectureNameTheTensors()
    {
        var e = Assert.Throws<LoupeException>(() => Load("fashion-cnn", TestEnv.Fixture("fashion_cnn_seed0.pt"), 5));
        Assert.Contains("fc.weight: file has (10×128), model expects (5×128)", e.Message);
        Assert.Contains("fc.bias", e.Message);
        var e2 = Assert.Throws<LoupeException>(() => Load("resnet18", TestEnv.Fixture("fashion_cnn_seed0.safetensors")));
        Assert.Contains("missing", e2.Message);
        Assert.Contains("layer1.0.conv1.weight", e2.Message);
        Assert.Contains("unexpected", e2.Message);
    }

    [Fact]
    public void NonZipPicklesAndGarbageAreRefusedNotExecuted()
    {
        var dir = TestEnv.TempDir();
        var legacy = Path.Combine(dir, "legacy.pt");
        // A pickle (protocol 2) that would call os.system if it were executed: GLOBAL 'os system', REDUCE.
        File.WriteAllBytes(legacy, [0x80, 0x02, .. "cos\nsystem\n"u8, .. "X\u0005\0\0\0touch"u8, 0x85, 0x52, 0x2e]);
        var e = Assert.Throws<LoupeException>(() => Load("fashion-cnn", legacy));
        Assert.Contains("refused", e.Message);
        Assert.Contains(legacy, e.Message);
        var garbage = Path.Combine(dir, "garbage.safetensors");
        File.WriteAllBytes(garbage, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
        Assert.Contains("header length", Assert.Throws<LoupeException>(() => Load("fashion-cnn", garbage)).Message);
        var zipGarbage = Path.Combine(dir, "zip.pt");
        File.WriteAllBytes(zipGarbage, [.. "PK\u0003\u0004"u8, .. new byte[64]]);
        Assert.Contains(zipGarbage, Assert.Throws<LoupeException>(() => Load("fashion-cnn", zipGarbage)).Message);
    }

    [Fact]
    public void CaptureForGradientsStopsAtTheLayerAndLeavesNoHooks()
    {
        using var model = Load("fashion-cnn", TestEnv.Fixture("fashion_cnn_seed0.pt"));
        using var scope = NewDisposeScope();
        var x = Npy.Read(TestEnv.Fixture("fashion_input.npy")).ToTensor();
        Tensor a, y;
        using (var cap = model.Capture(["relu3", "bn2"], forGradients: true))
        {
            y = model.Forward(x);
            a = cap["relu3"];
            Assert.True(a.requires_grad);
            Assert.Equal([4L, 128, 7, 7], a.shape);
            var g = CheckedOps.Grad([y[.., 6].sum()], [a])[0];
            Assert.Equal(a.shape, g.shape);
            Assert.Throws<LoupeException>(() => cap["conv1"]);
        }
        // After dispose no hook fires: the same forward works and captures nothing.
        using var y2 = model.Forward(x);
        Assert.True(TestEnv.RelL2(y2.ToArray<float>(), y.detach().ToArray<float>()) < 1e-7);
    }
}

/// <summary>The shipped demo model: it must be the trained one (≥ 90 % test accuracy, recorded in training.json).</summary>
public class DemoModelTests
{
    static double Accuracy(string images, string labels, int? limit)
    {
        using var model = new TorchVisionAdapter().Load(new TorchVisionOptions
        {
            Architecture = "fashion-cnn", Weights = Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"),
        }, new ModelLoadContext(TestEnv.RepoRoot, 0));
        using var src = new Loupe.Data.IdxAdapter().Open(new Loupe.Data.IdxOptions { Images = images, Labels = labels, Limit = limit }, new DataOpenContext("/", model.DefaultInput));
        long correct = 0, total = 0;
        foreach (var b in src.Read(model.DefaultInput, 500, default))
        {
            using (b)
            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var pred = model.Forward(model.DefaultInput.Normalize(b.Pixels)).argmax(1).ToArray<long>();
                correct += pred.Zip(b.Labels!).Count(p => p.First == p.Second);
                total += pred.Length;
            }
        }
        return correct / (double)total;
    }

    [Fact]
    public void ShippedModelClassifiesTheShippedTestImages()
    {
        var dir = Path.Combine(TestEnv.Samples, "data", "fashion-mnist");
        var acc = Accuracy(Path.Combine(dir, "t10k-first500-images-idx3-ubyte.gz"), Path.Combine(dir, "t10k-first500-labels-idx1-ubyte.gz"), null);
        Assert.True(acc >= 0.88, $"accuracy on the 500 shipped test images: {acc:P1}");
        var recorded = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "training.json")));
        Assert.True(recorded.RootElement.GetProperty("testAccuracy").GetDouble() >= 0.90);
    }

    [Fact]
    public void ShippedModelReachesNinetyPercentOnTheFullTestSetWhenInstalled()
    {
        const string dir = "/usr/share/datasets/fashion-mnist"; // Debian dataset-fashion-mnist (scripts/setup.sh --train)
        if (!File.Exists(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"))) return;
        var acc = Accuracy(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), Path.Combine(dir, "t10k-labels-idx1-ubyte.gz"), null);
        Assert.True(acc >= 0.90, $"test accuracy {acc:P2}");
    }
}
