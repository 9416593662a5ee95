using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Techniques against independently computed references: PyTorch implementations of the published
/// formulas (tests/fixtures/make_fixtures.py) and closed-form cases.</summary>
public class TechniqueTests
{
    static string FixturePipeline(string steps) => TestEnv.FixturePipeline(steps, batchSize: 3);

    internal static float[] Stack(Loupe.Core.RunResult r, string step, string name, int n = 4) =>
        Enumerable.Range(0, n).SelectMany(i => TestEnv.Artifact(r, $"{step}/{i:D5}.{name}.npy").Data).ToArray();

    internal static void Close(float[] actual, string fixture, double tol)
    {
        var expected = Npy.Read(TestEnv.Fixture(fixture)).Data;
        var err = TestEnv.RelL2(actual, expected);
        Assert.True(err <= tol, $"{fixture}: relative L2 error {err:E2} > {tol:E0}");
    }

    // Saliency, Grad-CAM and occlusion against make_fixtures.py, and saliency's max over channels, run through the
    // in-process API: Loupe.Library.Tests/TechniqueApiTests. Here: what needs the run folder or the pipeline.

    [Fact]
    public void FiltersSaveTheExactWeightsAndActivationsThresholdByQuantile()
    {
        var r = TestEnv.Run(FixturePipeline("""
              - id: f
                uses: filters
                with: { layer: conv2 }
              - id: a
                uses: activations
                with: { layer: relu3, channels: [0, 5], threshold: { mode: quantile, quantile: 0.9 } }
              - id: v
                uses: activations
                with: { layer: relu3, channels: [5], threshold: { mode: value, value: 0.5 } }
            """));
        Assert.Equal(0, r.ExitCode);
        using var model = new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
            new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn", Weights = TestEnv.Fixture("fashion_cnn_seed0.pt") }, new ModelLoadContext(TestEnv.RepoRoot, 0));
        var w = model.GetParameter("conv2.weight")!.ToArray<float>();
        Assert.Equal(w, TestEnv.Artifact(r, "f/weights.npy").Data);
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "f", "filters.png")));

        // Independent check of the per-channel dataset quantile (NumPy 'linear' definition) at layer resolution.
        using var scope = NewDisposeScope();
        using var cap = model.Capture(["relu3"], false);
        model.Forward(Npy.Read(TestEnv.Fixture("fashion_input.npy")).ToTensor());
        var act = cap["relu3"];
        var thresholds = TestEnv.Artifact(r, "a/thresholds.npy").Data;
        foreach (var c in new[] { 0, 5 })
        {
            var v = act[.., c].flatten().ToArray<float>().OrderBy(x => x).ToArray();
            double pos = 0.9 * (v.Length - 1);
            int lo = (int)pos;
            var q = v[lo] + (pos - lo) * (v[Math.Min(lo + 1, v.Length - 1)] - v[lo]);
            Assert.Equal(q, thresholds[c], 1e-5);
        }
        // Masks are exactly (upsampled activation > threshold).
        var maps = TestEnv.Artifact(r, "v/00001.activations.npy");
        var masks = TestEnv.Artifact(r, "v/00001.masks.npy");
        var up = Display.Resize(maps.ToTensor(), 28, 28);
        Assert.Equal((up > 0.5f).to(ScalarType.Float32).ToArray<float>(), masks.Data);
        Assert.Equal([1L, 7, 7], maps.Shape);
    }

    [Fact]
    public void ClosedFormLinearModelSaliencyAndOcclusion()
    {
        // For a linear score y = Σ w·x, saliency is |w| and occlusion with a zero fill over a 1×1 window is w·x.
        using var scope = NewDisposeScope();
        var w = randn(1, 1, 6, 6);
        var x = randn(1, 1, 6, 6);
        var model = new LinearModel(w);
        var target = new Loupe.Targets.TopOneTargetFactory().Create(new NoOptions(), new TargetContext([], 1, []));
        var xg = x.requires_grad_(true);
        var (_, cap, ti, sel) = Explain.Forward(model, target, xg, [], true);
        var g = Explain.Gradient(target, ti, sel, xg);
        cap.Dispose();
        Assert.True(TestEnv.RelL2(g.ToArray<float>(), w.ToArray<float>()) < 1e-6);
    }

    sealed class LinearModel(Tensor w) : IModel
    {
        public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.Gradients;
        public InputSpec DefaultInput => new(1, 6, 6, [0f], [1f]);
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
}
