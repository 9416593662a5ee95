using Loupe.Analysis.Cam;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>pytorch-grad-cam's fasterrcnn_reshape_transform (the CAMs' <c>aggregate: concat</c>): each layer's
/// |activation| resized bilinearly (align_corners false) to the last layer's grid, concatenated along the channels.
/// Halving a grid bilinearly without align_corners averages each 2×2 block (the sample points fall midway): a closed
/// form to check against. (The option in a pipeline: Loupe.Tests/NewerCamTests.)</summary>
public class CamConcatTests
{
    [Fact]
    public void ConcatJoinsTheLayersAbsoluteActivationsOnTheLastLayersGrid()
    {
        using var scope = NewDisposeScope();
        var a = randn(2, 3, 8, 8, generator: new Generator(7));
        var b = randn(2, 5, 4, 4, generator: new Generator(8));
        CamLayer Layer(Tensor t, string name) => new(t, null, name, zeros(2, 1, 8, 8), null!, null!);
        var joined = CamAnalysis<CamOptions>.Concatenated([Layer(a, "fpn.0"), Layer(b, "pool")]);
        Assert.Equal([2L, 8, 4, 4], joined.Activation.shape);
        Assert.Equal("fpn.0+pool", joined.Layer);
        var expected = cat([nn.functional.avg_pool2d(a.abs(), 2), b.abs()], 1);
        Assert.True((joined.Activation - expected).abs().max().item<float>() < 1e-6f);
    }
}
