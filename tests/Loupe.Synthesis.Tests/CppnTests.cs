using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;

namespace Loupe.Synthesis.Tests;

/// <summary><c>parameterization: cppn</c> (Lucent's <c>param.cppn</c>): the image of given weights against the CPPN
/// written out with torch modules (tests/fixtures/make_cppn_fixtures.py: 1×1 convolutions, the composite activation,
/// instance norm, sigmoid, Lucent's coordinate grid, non-square); Lucent's initialisation; optimisation on the demo CNN.</summary>
public class CppnTests
{
    static CppnTests() => _ = Env.RepoRoot;

    static NdArray Fixture(string name) => Npy.Read(Path.Combine(Env.RepoRoot, "tests", "fixtures", "synthesis", name));

    [Theory]
    [InlineData("rgb", 6, 4, 3, 9, 13, false)]
    [InlineData("grey_norm", 5, 3, 1, 8, 6, true)]
    public void TheImageIsLucentsCppnOfTheWeights(string name, int hidden, int layers, int channels, int h, int w, bool normalize)
    {
        using var scope = NewDisposeScope();
        using var param = new Parameterization(ParameterizationKind.Cppn, 1, channels, h, w, decorrelate: true, RangeMapping.Sigmoid, (hidden, layers, normalize));
        var p = Fixture($"cppn_{name}_params.npy");
        Assert.Equal([1L, param.Network!.Count], p.Shape);
        var image = param.Image(p.ToTensor()).ToArray<float>();
        var expected = Fixture($"cppn_{name}_image.npy");
        Assert.Equal([1L, channels, h, w], expected.Shape);
        for (int i = 0; i < image.Length; i++) Assert.True(Math.Abs(image[i] - expected.Data[i]) <= 2e-6, $"value {i}: {image[i]} against torch {expected.Data[i]}");
    }

    /// <summary>Lucent's start: the last layer's weights 0 and every bias 0, so each image is grey (0.5); the other
    /// weights N(0, 1/in) from the step's generator (the same draws for the same seed).</summary>
    [Fact]
    public void StartsGreyWithLucentsInitialisation()
    {
        using var scope = NewDisposeScope();
        using var param = new Parameterization(ParameterizationKind.Cppn, 2, 3, 10, 12, true, RangeMapping.Sigmoid);
        var p = param.Initial(new Generator(7));
        Assert.Equal([2L, param.Network!.Count], p.shape);
        Assert.Equal(2 * 24 + 6 * (48 * 24 + 24) + (48 * 3 + 3) + 24, param.Network.Count);   // 8 layers, 24 hidden
        Assert.True(param.Image(p).sub(0.5f).abs().max().item<float>() == 0);
        Assert.Equal(p.ToArray<float>(), param.Initial(new Generator(7)).ToArray<float>());
        // The first layer's weights (2 inputs): N(0, 1/2), 48 draws per image.
        var first = p[0, ..48];
        Assert.InRange(first.std().item<float>(), 0.4, 1.0);
    }

    /// <summary>On the demo CNN a CPPN raises a channel of relu3 from grey, as Lucent's CPPN notebook (Adam at 0.005);
    /// blur_every, which acts on pixels or Fourier coefficients, is refused.</summary>
    [Fact]
    public void OptimisesAChannelAndRefusesPixelOnlyOptions()
    {
        var r = Env.Run(Env.DemoPipeline("""
              - id: cppn
                uses: activation-max
                with: { objective: 'relu3:5', parameterization: cppn, cppn_channels: 8, cppn_layers: 4, learning_rate: 0.005, steps: 40 }
            """, seed: 1));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var row = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "cppn", "objectives.json")))!.AsArray()[0]!;
        Assert.True(row["final"]!.GetValue<double>() > row["start"]!.GetValue<double>() + 0.1, row.ToJsonString());
        var bad = Env.Run(Env.DemoPipeline("""
              - { id: cppn, uses: activation-max, with: { objective: 'relu3:5', parameterization: cppn, blur_every: 4 } }
            """));
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("a cppn's image is a function of its weights", string.Join("\n", bad.Errors));
    }
}
