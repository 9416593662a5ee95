namespace Loupe.Tests;

/// <summary>Issue 20 item 2 on the onnx backend: DeepLift's rescale rule at graph level (Relu, Sigmoid, Tanh, Softmax
/// and MaxPool nodes with Captum's nonlinear, softmax and maxpool multipliers) and DeepLiftShap with references drawn
/// from the data source, against PyTorch implementations of Captum's rules (tests/fixtures/make_layer_input_fixtures.py).</summary>
public class DeepLiftOnnxTests
{
    static Loupe.Core.RunResult Ok(Loupe.Core.RunResult r)
    {
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        return r;
    }

    [Fact]
    public void ReluAndMaxPoolNodesSumToDelta()
    {
        var r = Ok(TestEnv.Run(LayerInputTests.OnnxPipeline("conv_cnn3.onnx", "conv_input_3x16.npy", """
              - { id: dl, uses: deeplift }
              - { id: ab, uses: feature-ablation, with: { cell: 16 } }
            """)));
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 2), "dl_cnn3_deeplift.npy", 1e-4);
        // Summation to delta: Σ attributions = F(x) − F(0) (feature ablation of the whole 16×16 image with the zero fill).
        for (int i = 0; i < 2; i++)
        {
            double total = TestEnv.Artifact(r, $"dl/{i:D5}.deeplift.npy").Data.Sum(v => (double)v);
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];
            Assert.True(Math.Abs(total - gap) <= 1e-4 * Math.Abs(gap) + 1e-6, $"input {i}: Σ {total} vs F(x) − F(x′) {gap}");
        }
    }

    [Fact]
    public void LeakyReluNodesTakeTheRescaleRuleAndSumToDelta()
    {
        // Captum's nonlinear rule covers nn.LeakyReLU; the interpreter gave LeakyRelu nodes plain gradients until
        // 2026-12-05 (tests/fixtures/make_leaky_fixtures.py: conv → LeakyRelu 0.2 → conv → LeakyRelu 0.05 → GAP → fc).
        var r = Ok(TestEnv.Run(LayerInputTests.OnnxPipeline("dl_leaky.onnx", "dl_leaky_input.npy", """
              - { id: dl, uses: deeplift }
              - { id: ab, uses: feature-ablation, with: { cell: 12 } }
              - { id: grad, uses: saliency, with: { abs: false } }
            """, batchSize: 3)));
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 3), "dl_leaky_deeplift.npy", 1e-4);
        for (int i = 0; i < 3; i++)
        {
            double total = TestEnv.Artifact(r, $"dl/{i:D5}.deeplift.npy").Data.Sum(v => (double)v);
            double gap = TestEnv.Artifact(r, $"ab/{i:D5}.feature-ablation.npy").Data[0];   // F(x) − F(0): the whole image ablated
            Assert.True(Math.Abs(total - gap) <= 1e-4 * Math.Abs(gap) + 1e-6, $"input {i}: Σ {total} vs F(x) − F(x′) {gap}");
        }
        var gxi = TechniqueTests.Stack(r, "grad", "saliency", 3).Zip(Loupe.Abstractions.Toolkit.Npy.Read(TestEnv.Fixture("dl_leaky_input.npy")).Data, (g, x) => g * x).ToArray();
        Assert.True(TestEnv.RelL2(gxi, Loupe.Abstractions.Toolkit.Npy.Read(TestEnv.Fixture("dl_leaky_deeplift.npy")).Data) > 1e-2);
    }

    [Fact]
    public void SigmoidTanhSoftmaxAndAPaddedPoolFollowCaptumsRules()
    {
        var r = Ok(TestEnv.Run(LayerInputTests.OnnxPipeline("dl_net.onnx", "dl_net_input.npy", """
              - { id: dl, uses: deeplift }
              - { id: dls, uses: deeplift-shap, with: { baselines_from_data: 3, baseline_seed: 1234, internal_batch_size: 2 } }
              - { id: grad, uses: saliency, with: { abs: false } }
            """, batchSize: 5)));
        // Captum's softmax rule subtracts the mean over the whole [x; x′] batch, so the reference ran the same batches:
        // all 5 inputs at once (deeplift), one input × reference pair at a time (deeplift-shap: a drawn reference is
        // also an input, and its zero differences make the batch coupling float-rounding noise).
        TechniqueTests.Close(TechniqueTests.Stack(r, "dl", "deeplift", 5), "dl_net_deeplift.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "dls", "deeplift-shap", 5), "dl_net_deeplift_shap_data.npy", 1e-4);
        // The rules are active: plain gradient × (x − 0) is another map.
        var gxi = TechniqueTests.Stack(r, "grad", "saliency", 5).Zip(Loupe.Abstractions.Toolkit.Npy.Read(TestEnv.Fixture("dl_net_input.npy")).Data, (g, x) => g * x).ToArray();
        Assert.True(TestEnv.RelL2(gxi, Loupe.Abstractions.Toolkit.Npy.Read(TestEnv.Fixture("dl_net_deeplift.npy")).Data) > 1e-2);
    }

    [Fact]
    public void DeepLiftShapDrawsItsReferencesFromTheDataOnTorchSharp()
    {
        var r = Ok(TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: dls, uses: deeplift-shap, with: { baselines_from_data: 2, baseline_seed: 7 } }
            """, batchSize: 3)));
        TechniqueTests.Close(TechniqueTests.Stack(r, "dls", "deeplift-shap"), "dl_cnn_deeplift_shap_data.npy", 1e-4);
        // The documented rule: the inputs with the smallest splitmix64 keys (here inputs 0 and 2 of 4).
        var keys = Enumerable.Range(0, 4).Select(i => (Key: Loupe.Analysis.Decisions.DataReferences.Key(7, i), Index: i)).OrderBy(k => k.Key).Take(2).Select(k => k.Index).Order();
        Assert.Equal([0, 2], keys);
    }

    [Fact]
    public void DeepLiftShapNeedsExactlyOneReferenceSet()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: none, uses: deeplift-shap }
              - { id: both, uses: deeplift-shap, with: { baselines_from_data: 2, baselines_file: {{TestEnv.Yaml(TestEnv.Fixture("fam_gshap_baselines.npy"))}} } }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Equal(2, r.Errors.Count(e => e.ToString().Contains("give either 'baselines_file' or 'baselines_from_data'")));
    }
}
