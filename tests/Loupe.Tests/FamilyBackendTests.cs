using Loupe.Core;

namespace Loupe.Tests;

/// <summary>The issue-20 methods on the other backends: the shipped demo CNN through torchvision (safetensors, whose maps
/// the PyTorch references check), through the ONNX interpreter (`onnx`) and, for the forward-only methods, through
/// ONNX Runtime (`onnx-runtime`) give the same maps — same seeds, same input ids, hence the same draws.</summary>
public class FamilyBackendTests
{
    const string ForwardOnly = """
              - { id: ks, uses: kernel-shap, with: { cell: 7, samples: 40 } }
              - { id: lm, uses: lime, with: { cell: 7, samples: 40, alpha: 0.001 } }
              - { id: ss, uses: shapley-sampling, with: { cell: 14, samples: 3 } }
              - { id: fp, uses: feature-permutation, with: { cell: 7 } }
        """;

    const string WithGradients = """
              - { id: gs, uses: gradient-shap, with: { samples: 6, stdevs: 0.1 } }
        """;

    internal static RunResult Run(string model, string steps)
    {
        var dir = TestEnv.TempDir();
        var m = Path.Combine(TestEnv.Samples, "models", "fashion-cnn");
        var with = model == "torchvision"
            ? $"{{ architecture: fashion-cnn, weights: {TestEnv.Yaml(Path.Combine(m, "fashion-cnn.safetensors"))} }}"
            : $"{{ path: {TestEnv.Yaml(Path.Combine(m, "fashion-cnn.onnx"))}, channels: 1, height: 28, width: 28, mean: [0.2860], std: [0.3530] }}";
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model: { uses: {{model}}, with: {{with}} }
            data: { uses: idx, with: { images: {{TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}}, limit: 4 } }
            settings: { batch_size: 4 }
            steps:
            {{steps}}
            """, dir));
        Assert.True(r.ExitCode == 0, $"{model}: " + string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        return r;
    }

    internal static void Same(RunResult a, RunResult b, string step, string name)
    {
        var x = TechniqueTests.Stack(a, step, name);
        var err = TestEnv.RelL2(TechniqueTests.Stack(b, step, name), x);
        Assert.True(err <= 1e-4, $"{step}: relative L2 {err:E2}");
        Assert.Contains(x, v => v != 0);
    }

    [Theory]
    [InlineData("onnx")]
    [InlineData("onnx-runtime")]
    public void ForwardOnlyMethodsGiveTheSameMapsOnTheOnnxBackends(string backend)
    {
        var tv = Run("torchvision", ForwardOnly);
        var other = Run(backend, ForwardOnly);
        foreach (var (step, name) in new[] { ("ks", "kernel-shap"), ("lm", "lime"), ("ss", "shapley-sampling"), ("fp", "feature-permutation") })
            Same(tv, other, step, name);
    }

    [Fact]
    public void GradientShapGivesTheSameMapsOnTheOnnxInterpreter() =>
        Same(Run("torchvision", WithGradients), Run("onnx", WithGradients), "gs", "gradient-shap");
}
