using Loupe.Testing;

namespace Loupe.Evaluation.Tests;

/// <summary>input-invariance's default layer is the model's first layer that computes on the image. An exported graph
/// lists its shape computations first (torchvision's vit_b_16 starts with Shape): the default took that integer
/// tensor and failed ("Single is not compatible with Int64"); it now takes the first convolution.</summary>
public class InputInvarianceDefaultTests
{
    static Loupe.Core.RunResult Run(string with) => QualityTests.RunOn(RegionNet.Images(3, 11), 5,
        $"onnx, with: {{ path: {Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "shape_first.onnx"))} }}", $$"""
              - { id: gxi, uses: gradient-x-input }
              - { id: ii, uses: input-invariance, with: { of: gxi{{with}} } }
            """);

    [Fact]
    public void The_default_first_layer_is_the_first_convolution_not_a_shape()
    {
        var byDefault = Run("");
        Assert.True(byDefault.ExitCode == 0, Env.Dump(byDefault));
        var named = Run(", layer: conv");
        Assert.True(named.ExitCode == 0, Env.Dump(named));
        var a = Env.InputValues(byDefault, "ii", "input_invariance");
        Assert.Equal(Env.InputValues(named, "ii", "input_invariance"), a);
        // Gradient × input is not input-invariant (Kindermans et al.): the shifted input changes the map.
        Assert.All(a, v => Assert.True(v > 1e-3, $"gradient x input's relative change {v}"));
        var shape = Run(", layer: /Shape_output_0");
        Assert.NotEqual(0, shape.ExitCode);
    }
}
