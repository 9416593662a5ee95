using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary><c>lrp</c> through Pad, Clip and Sigmoid nodes of an ONNX export (tests/fixtures/make_lrp_graph_fixtures.py:
/// activations pass relevance through as Zennit's Pass rule — or, under its ExcitationBackprop, take their own gradient —
/// the pad keeps its unpadded region), against the PyTorch implementation of Zennit's rules.</summary>
public class LrpPadClipSigmoidTests
{
    [Theory]
    [InlineData("epsilon-plus", LrpComposite.EpsilonPlus)]
    [InlineData("epsilon-gamma-box", LrpComposite.EpsilonGammaBox)]
    [InlineData("epsilon-alpha2-beta1", LrpComposite.EpsilonAlpha2Beta1)]
    [InlineData("excitation-backprop", LrpComposite.ExcitationBackprop)]
    public void MatchesThePyTorchReference(string fixture, LrpComposite composite)
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("lrp_pad_clip_sigmoid.onnx"), Mean = [0.5f, 0.5f, 0.5f], Std = [0.25f, 0.25f, 0.25f] });
        using var scope = NewDisposeScope();
        var graph = ((IModelGraphSource)model).Graph();
        Assert.Equal([GraphOp.Pad, GraphOp.Clip, GraphOp.Sigmoid], graph.Nodes.Select(n => n.Op).Where(o => o is GraphOp.Pad or GraphOp.Clip or GraphOp.Sigmoid));
        MatchesReference(model, "lrp_pcs_input.npy", composite, $"lrp_pcs_{fixture}.npy");
    }

    /// <summary>LRP of the top-1 class (one-hot relevance, <paramref name="composite"/>) on the inputs of
    /// <paramref name="input"/> against the reference maps of <paramref name="reference"/> (relative L2 ≤ 1e-4).</summary>
    internal static void MatchesReference(IModel model, string input, LrpComposite composite, string reference)
    {
        var x = Npy.Read(Env.LoupeFixture(input)).ToTensor();
        Tensor y;
        using (no_grad()) y = model.Forward(x);
        var relevance = nn.functional.one_hot(y.argmax(1), y.shape[1]).to(ScalarType.Float32);
        var map = Env.Data(Lrp.Relevance(model, model.DefaultInput, new LrpOptions { Composite = composite }, x, relevance, y));
        var expected = Npy.Read(Env.LoupeFixture(reference)).Data;
        Assert.Equal(expected.Length, map.Length);
        Assert.True(Env.RelL2(map, expected) <= 1e-4, $"{reference}: {Env.RelL2(map, expected):E2}");
    }

    [Fact]
    public void APadNodePadsLeftRightTopBottomWithItsValue()
    {
        var node = new GraphNode("p", GraphOp.Pad, [-1]) { Pads = [1, 0, 0, 2], PadValue = 0.5 };
        using var scope = NewDisposeScope();
        var y = node.Apply([ones(1, 1, 2, 2)]);
        Assert.Equal([1L, 1, 4, 3], y.shape);
        Assert.Equal(0.5f, y[0, 0, 3, 0].item<float>());
        Assert.Equal(1f, y[0, 0, 0, 1].item<float>());
    }
}
