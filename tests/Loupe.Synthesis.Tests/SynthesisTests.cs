using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;

namespace Loupe.Synthesis.Tests;

public class SynthesisTests
{
    static SynthesisTests() => _ = Env.RepoRoot;

    /// <summary>S(I) = ⟨w, I⟩ as one output: a model whose class-0 logit is linear in the pixels.</summary>
    sealed class LinearModel(Tensor w) : IModel
    {
        public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations;
        public InputSpec DefaultInput => new(1, (int)w.shape[2], (int)w.shape[3], [0f], [1f]);
        public IReadOnlyList<string>? DefaultLabels => null;
        public IReadOnlyList<LayerInfo> Layers => [];
        public Tensor Forward(Tensor input) => (input * w).sum([1, 2, 3]).unsqueeze(1);
        public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => new NoCapture();
        public Tensor? GetParameter(string name) => null;
        public IReadOnlyList<string> ParameterNames => [];
        public void Dispose() { }
        sealed class NoCapture : ILayerCapture
        {
            public Tensor this[string layer] => throw new KeyNotFoundException(layer);
            public bool TryGet(string layer, out Tensor activation) { activation = null!; return false; }
            public void Dispose() { }
        }
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd, 0.1, 200, 1.0)]
    [InlineData(OptimizerKind.Adam, 0.02, 1500, 0.5)]
    public void LinearScoreWithL2ReachesClosedFormOptimum(OptimizerKind opt, double lr, int steps, double lambda)
    {
        // argmax_I ⟨w, I⟩ − λ‖I‖² = w / (2λ)   (raw pixels, no sigmoid or clamp, L2 centred at 0).
        using var scope = NewDisposeScope();
        var w = randn([1, 1, 6, 6], generator: new Generator(3));
        var model = new LinearModel(w);
        var o = new ActivationMaxOptions
        {
            Parameterization = ParameterizationKind.Pixels, Range = RangeMapping.None, InitSd = 0.01, L2 = lambda, L2Center = 0,
            Optimizer = opt, LearningRate = lr, Steps = steps,
        };
        var r = Synthesizer.Optimize(model, model.DefaultInput, [new ClassLogit("0", 0)], o, seed: 1);
        var expected = (w / (2 * lambda)).ToArray<float>();
        var got = r.Images.ToArray<float>();
        Assert.True(Env.RelL2(got, expected) < 0.01, $"relative error {Env.RelL2(got, expected):E3}");
        // The recorded objective approaches S(I*) = ‖w‖²/(2λ).
        var sStar = (w * w).sum().item<float>() / (2 * lambda);
        Assert.Equal(1.0, r.Final[0] / sStar, 1e-2);
    }

    /// <summary>Logits = flattened pixels × W (pixels × classes).</summary>
    sealed class MatrixModel(Tensor w, int h, int wd) : IModel
    {
        public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.Gradients;
        public InputSpec DefaultInput => new(1, h, wd, [0f], [1f]);
        public IReadOnlyList<string>? DefaultLabels => null;
        public IReadOnlyList<LayerInfo> Layers => [];
        public Tensor Forward(Tensor input) => input.flatten(1).mm(w);
        public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => new LinearModel(w).Capture(layers, forGradients);
        public Tensor? GetParameter(string name) => null;
        public IReadOnlyList<string> ParameterNames => [];
        public void Dispose() { }
    }

    [Fact]
    public void ClassObjectivesScoreEachRowOnItsOwnObjective()
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        var w = randn([12, 3], generator: gen);
        var model = new MatrixModel(w, 3, 4);
        var x = randn([2, 1, 3, 4], generator: gen);
        var logits = x.flatten(1).mm(w);
        // rows[r] names the objective of row r: row 0 → objective 1 (class 0), row 1 → objective 0 (class 2).
        var got = Synthesizer.Scores(model, model.DefaultInput, [new ClassLogit("2", 2), new ClassLogit("0", 0)], [], x, tensor(new long[] { 1, 0 }));
        Assert.Equal(new[] { logits[0, 0].item<float>(), logits[1, 2].item<float>() }, got.ToArray<float>());
        // A class beyond the outputs still gets the objective's own error.
        var e = Assert.Throws<LoupeException>(() => Synthesizer.Scores(model, model.DefaultInput, [new ClassLogit("7", 7), new ClassLogit("0", 0)], [], x, arange(2L)));
        Assert.Contains("out of range", e.Message);
    }

    [Fact]
    public void StartValuesWithoutTransformsAreTheInitialImagesScores()
    {
        // Without transforms the start values come from step 0's pass; with 0 steps they come from a separate pass.
        using var scope = NewDisposeScope();
        var model = new MatrixModel(randn([12, 3], generator: new Generator(6)), 3, 4);
        var objectives = new Objective[] { new ClassLogit("0", 0), new ClassLogit("1", 1), new ClassLogit("2", 2) };
        var o = new ActivationMaxOptions { Parameterization = ParameterizationKind.Pixels, Steps = 3 };
        var fromStep = Synthesizer.Optimize(model, model.DefaultInput, objectives, o, seed: 4).Start;
        var separate = Synthesizer.Optimize(model, model.DefaultInput, objectives, o with { Steps = 0 }, seed: 4).Start;
        for (int i = 0; i < 3; i++) Assert.Equal(separate[i], fromStep[i], 1e-5);
    }

    [Fact]
    public void JitterShiftsByTheOffset()
    {
        using var scope = NewDisposeScope();
        var img = arange(2 * 3 * 5 * 7, dtype: ScalarType.Float32).view(2, 3, 5, 7);
        var s = Transforms.Jitter(img, 2, -3);
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 7; x++)
                Assert.Equal(img[1, 2, y, x].item<float>(), s[1, 2, (y + 2) % 5, ((x - 3) % 7 + 7) % 7].item<float>());
        Assert.Equal(img.ToArray<float>(), Transforms.Jitter(s, -2, 3).ToArray<float>());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(360.0)]
    [InlineData(-720.0)]
    public void FullTurnRotationPreservesContent(double degrees)
    {
        using var scope = NewDisposeScope();
        var img = rand([2, 3, 9, 11], generator: new Generator(5));
        var r = Transforms.Affine(img, 1.0, degrees);
        Assert.True((r - img).abs().max().item<float>() < 1e-5);
        // Through grid_sample itself (the fast path above skips it for whole turns): an identity affine reproduces the input.
        var theta = tensor(new float[] { 1, 0, 0, 0, 1, 0 }).view(1, 2, 3).expand(2, 2, 3);
        var grid = nn.functional.affine_grid(theta, [2, 3, 9, 11], align_corners: false);
        var g = nn.functional.grid_sample(img, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Border, align_corners: false);
        Assert.True((g - img).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void RotationBy90MovesCornersAndScaleZooms()
    {
        using var scope = NewDisposeScope();
        var img = zeros(1, 1, 8, 8);
        img[0, 0, 0, 0] = tensor(1f);                        // top-left
        var r = Transforms.Affine(img, 1.0, 90);
        // Exactly one corner lights up, and it is not the top-left one.
        Assert.True(r[0, 0, 0, 0].item<float>() < 0.5f);
        Assert.Equal(1, (r > 0.5f).sum().item<long>());
        var blob = zeros(1, 1, 16, 16); blob[0, 0, 6..10, 6..10] = tensor(1f);
        Assert.True(Transforms.Affine(blob, 2.0, 0).sum().item<float>() > 2.5f * blob.sum().item<float>());   // ×2 zoom: ~4× area
    }

    [Theory]
    [InlineData(ParameterizationKind.Fft, RangeMapping.None, 1, 12, 12)]
    [InlineData(ParameterizationKind.Fft, RangeMapping.None, 3, 10, 15)]       // odd width
    [InlineData(ParameterizationKind.Fft, RangeMapping.Sigmoid, 3, 16, 16)]
    [InlineData(ParameterizationKind.Pixels, RangeMapping.Sigmoid, 3, 7, 9)]
    public void ParameterizationRoundTrips(ParameterizationKind kind, RangeMapping range, int c, int h, int w)
    {
        using var scope = NewDisposeScope();
        var p = new Parameterization(kind, 2, c, h, w, decorrelate: true, range);
        var img = rand([2, c, h, w], generator: new Generator(7)) * 0.9f + 0.05f;
        var back = p.Image(p.Encode(img));                    // image → spectrum → image
        Assert.True((back - img).abs().max().item<float>() < 1e-4, $"max error {(back - img).abs().max().item<float>()}");
    }

    [Fact]
    public void FftSpectrumIsScaledByInverseFrequency()
    {
        // A unit coefficient at frequency (0, 1/4) gives a cosine of amplitude scale/(4·√(HW))·2 along x.
        using var scope = NewDisposeScope();
        var p = new Parameterization(ParameterizationKind.Fft, 1, 1, 8, 8, false, RangeMapping.None);
        var spec = zeros(p.ParameterShape);
        spec[0, 0, 0, 2, 0] = tensor(1f);
        var t = p.Spatial(spec);
        var row = t[0, 0, 3].ToArray<float>();
        double amp = 2.0 * (1 / 0.25) / Parameterization.FftMagic / 8;
        for (int x = 0; x < 8; x++) Assert.Equal(amp * Math.Cos(2 * Math.PI * 2 * x / 8), row[x], 1e-5);
    }

    [Fact]
    public void TotalVariationOfAKnownImage()
    {
        using var scope = NewDisposeScope();
        var img = zeros(1, 1, 4, 4); img[0, 0, .., 2..] = tensor(1f);    // a vertical edge of height 4
        Assert.Equal(4f, Synthesizer.TotalVariation(img).item<float>());
    }

    [Fact]
    public void BlurOfFftParametersEqualsCircularGaussianBlur()
    {
        using var scope = NewDisposeScope();
        var p = new Parameterization(ParameterizationKind.Fft, 1, 1, 32, 32, false, RangeMapping.None);
        var spec = randn(p.ParameterShape, generator: new Generator(2));
        var before = p.Spatial(spec);
        p.Blur(spec, 1.0);
        var after = p.Spatial(spec);
        // Reference: circular convolution with a normalised Gaussian (σ = 1) in the image domain.
        var k = Enumerable.Range(-8, 17).Select(i => Math.Exp(-i * i / 2.0)).ToArray();
        var ks = k.Sum();
        var b = before[0, 0].ToArray<float>();
        var tmp = new double[32 * 32]; var refImg = new double[32 * 32];
        for (int y = 0; y < 32; y++) for (int x = 0; x < 32; x++) { double s = 0; for (int i = -8; i <= 8; i++) s += k[i + 8] / ks * b[y * 32 + ((x + i) % 32 + 32) % 32]; tmp[y * 32 + x] = s; }
        for (int y = 0; y < 32; y++) for (int x = 0; x < 32; x++) { double s = 0; for (int i = -8; i <= 8; i++) s += k[i + 8] / ks * tmp[((y + i) % 32 + 32) % 32 * 32 + x]; refImg[y * 32 + x] = s; }
        var a = after[0, 0].ToArray<float>();
        double maxErr = a.Select((v, i) => Math.Abs(v - refImg[i])).Max(), scale = refImg.Max(Math.Abs);
        Assert.True(maxErr < 0.02 * scale, $"max error {maxErr} (scale {scale})");
    }

    const string Fast = "steps: 25, jitter: 2, scales: [0.9, 1, 1.1], rotations: [-10, 0, 10], l2: 0.001, tv: 0.001";

    [Fact]
    public void SameSeedSameBytesOtherSeedDiffers()
    {
        byte[] Image(int seed)
        {
            var r = Env.Run(Env.DemoPipeline($$"""
                  - id: am
                    uses: activation-max
                    with: { objectives: ['relu3:5', 'class:sneaker - 0.5 * class:sandal'], {{Fast}} }
                """, seed));
            Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
            return File.ReadAllBytes(Path.Combine(r.OutDir!, "am", "01-class-sneaker-0.5-class-sandal.image.npy"));
        }
        var a = Image(1); var b = Image(1); var c = Image(2);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    /// <summary>Snapshots (Lucent's thresholds): the images after step k of a run are the final images of the same step
    /// stopped at k steps (same step id and seed, same draws), byte for byte; the progress sheet and each snapshot are
    /// written.</summary>
    [Fact]
    public void SnapshotsAreTheImagesAfterThoseSteps()
    {
        var r = Env.Run(Env.DemoPipeline($$"""
              - id: am
                uses: activation-max
                with: { objectives: ['relu3:5', 'class:sneaker'], snapshots: [3, 8], {{Fast}} }
            """, 2));
        var shortRun = Env.Run(Env.DemoPipeline($$"""
              - id: am
                uses: activation-max
                with: { objectives: ['relu3:5', 'class:sneaker'], {{Fast.Replace("steps: 25", "steps: 8")}} }
            """, 2));
        Assert.True(r.ExitCode == 0 && shortRun.ExitCode == 0, string.Join("\n", r.Errors.Concat(shortRun.Errors)));
        foreach (var id in new[] { "00-relu3-5", "01-class-sneaker" })
        {
            Assert.Equal(Env.Artifact(shortRun, $"am/{id}.image.npy").Data, Env.Artifact(r, $"am/{id}.image-step8.npy").Data);
            Assert.NotEqual(Env.Artifact(r, $"am/{id}.image-step3.npy").Data, Env.Artifact(r, $"am/{id}.image-step8.npy").Data);
            Assert.True(File.Exists(Path.Combine(r.OutDir!, "am", $"{id}.image-step3.png")));
        }
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "am", "progress.png")));
        var bad = Env.Run(Env.DemoPipeline("""
              - id: past
                uses: activation-max
                with: { objective: 'relu3:5', steps: 10, snapshots: [5, 11] }
            """));
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains(bad.Errors, e => e.Message.Contains("option 'snapshots' must list distinct steps in 1..10, got [5, 11]"));
    }

    [Fact]
    public void DemoCnnEveryClassIsSynthesised()
    {
        var r = Env.Run(Env.DemoPipeline("""
              - id: classes
                uses: activation-max
                with: { objective: 'class:*', steps: 150, learning_rate: 0.05, jitter: 1, l2: 0.0005 }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "classes", "objectives.json")))!.AsArray();
        Assert.Equal(10, json.Count);
        for (int k = 0; k < 10; k++)
        {
            double start = json[k]!["start"]!.GetValue<double>(), final = json[k]!["final"]!.GetValue<double>();
            Assert.Equal(k, json[k]!["predicted"]!.GetValue<long>());
            // The grey start image scores −20..+5; the synthesised one ≥ 10 and at least 10 above the start.
            Assert.True(final >= 10 && final - start >= 10, $"class {k}: logit {start:F2} → {final:F2}");
        }
        var hist = Env.Artifact(r, "classes/objective.npy");
        Assert.Equal([150L, 10], hist.Shape);
        var img = Env.Artifact(r, "classes/07-class-sneaker.image.npy");
        Assert.Equal([1L, 28, 28], img.Shape);
        Assert.All(img.Data, v => Assert.InRange(v, 0f, 1f));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "classes", "grid.png")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "classes", "objective.png")));
    }

    [Fact]
    public void BadObjectivesAreValidationErrorsWithLocations()
    {
        var path = Env.DemoPipeline("""
              - id: syntax
                uses: activation-max
                with: { objective: 'relu3:12 - * 2' }
              - id: channel
                uses: activation-max
                with: { objective: 'relu3:999' }
              - id: layer
                uses: activation-max
                with: { objective: 'relu9:1 + relu3:0' }
              - id: class
                uses: activation-max
                with: { objective: 'class:12' }
            """);
        var r = Env.Run(path);
        Assert.Equal(2, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.All(r.Errors, e => { Assert.Equal(path, e.File); Assert.True(e.Line > 0); });
        Assert.Contains(r.Errors, e => e.Message.Contains("'relu3:12 - * 2' — expected a term") && e.Message.Contains("position 11") && e.Line == 12);
        Assert.Contains(r.Errors, e => e.Message.Contains("channel 999 is out of range for layer 'relu3'") && e.Line == 15);
        Assert.Contains(r.Errors, e => e.Message.Contains("layer 'relu9' does not exist") && e.Message.Contains("did you mean", StringComparison.OrdinalIgnoreCase) && e.Line == 18);
        Assert.Contains(r.Errors, e => e.Message.Contains("class 12 is out of range"));
        Assert.True(r.Errors.Count >= 4, all);
    }

    [Fact]
    public void NegativeStepsAreRejectedWithTheLocation()
    {
        // Option ranges are checked when binding, before the model loads (so these come alone).
        var path = Env.DemoPipeline("""
              - id: steps
                uses: activation-max
                with: { objective: 'relu3:1', steps: -5 }
              - id: deep
                uses: deep-dream
                with: { layer: relu3, steps: 0 }
            """);
        var r = Env.Run(path);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.File == path && e.Line == 12 && e.Message.Contains("option 'steps' must be between 1") && e.Message.Contains("-5"));
        Assert.Contains(r.Errors, e => e.File == path && e.Line == 15 && e.Message.Contains("option 'steps'"));
    }

    [Fact]
    public void DeepDreamAmplifiesTheLayer()
    {
        var r = Env.Run(Env.DemoPipeline("""
              - id: dream
                uses: deep-dream
                with: { layer: relu2, octaves: 2, steps: 10, learning_rate: 0.04, jitter: 1 }
            """, data: $$"""
            data:
              uses: idx
              with: { images: {{Env.Samples("data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz")}}, limit: 2 }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var files = Directory.GetFiles(Path.Combine(r.OutDir!, "dream"), "*.dream.npy");
        Assert.Equal(2, files.Length);
        using var scope = NewDisposeScope();
        var model = new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
            new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn", Weights = Env.Demo("fashion-cnn.safetensors") },
            new ModelLoadContext(Env.RepoRoot, 0));
        double Energy(Tensor pixels)
        {
            using var cap = model.Capture(["relu2"], false);
            model.Forward(model.DefaultInput.Normalize(pixels));
            return cap["relu2"].pow(2).mean().item<float>();
        }
        // The first input of the idx file, as the data source delivers it.
        var dreamed = Npy.Read(files.OrderBy(f => f).First());
        Assert.Equal([1L, 28, 28], dreamed.Shape);
        var original = OriginalFirstImage();
        double e0 = Energy(original), e1 = Energy(dreamed.ToTensor().unsqueeze(0));
        Assert.True(e1 > 1.5 * e0, $"relu2 mean square {e0} → {e1} ({Path.GetFileName(files.OrderBy(f => f).First())}, max |Δ| {(dreamed.ToTensor().unsqueeze(0) - original).abs().max().item<float>()})");
    }

    static Tensor OriginalFirstImage()
    {
        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(Env.Samples("data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz")), System.IO.Compression.CompressionMode.Decompress);
        var buf = new byte[16 + 784];
        gz.ReadExactly(buf);
        return tensor(buf.Skip(16).Select(b => b / 255f).ToArray()).view(1, 1, 28, 28);
    }
}
