using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary><c>lrp</c> through squeeze-and-excitation and smooth activations under Zennit's conventions
/// (tests/fixtures/make_lrp_se_fixtures.py): SiLU (exported as x · σ(x), read back as one operator), hard-swish,
/// hard-sigmoid and GELU pass relevance as Zennit's Activation types do (ExcitationBackprop: their gradient), SE's
/// product takes its gradient as autograd gives it to Zennit's relevance, the pools split in proportion — against the
/// PyTorch implementation of Zennit's rules. Under Captum's conventions they are refused, by node.</summary>
public class LrpSqueezeExcitationTests
{
    static IModel Load() => Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("lrp_se.onnx"), Mean = [0.5f, 0.5f, 0.5f], Std = [0.25f, 0.25f, 0.25f] });

    [Theory]
    [InlineData("epsilon-plus", LrpComposite.EpsilonPlus)]
    [InlineData("epsilon-gamma-box", LrpComposite.EpsilonGammaBox)]
    [InlineData("epsilon-alpha2-beta1", LrpComposite.EpsilonAlpha2Beta1)]
    [InlineData("excitation-backprop", LrpComposite.ExcitationBackprop)]
    public void MatchesThePyTorchReference(string fixture, LrpComposite composite)
    {
        using var model = Load();
        using var scope = NewDisposeScope();
        var ops = ((IModelGraphSource)model).Graph().Nodes.Select(n => n.Op).ToList();
        Assert.Equal([GraphOp.Silu, GraphOp.Silu, GraphOp.Hardsigmoid, GraphOp.Mul, GraphOp.Hardswish, GraphOp.Gelu],
            ops.Where(o => o is GraphOp.Silu or GraphOp.Hardsigmoid or GraphOp.Mul or GraphOp.Hardswish or GraphOp.Gelu or GraphOp.Sigmoid));
        LrpPadClipSigmoidTests.MatchesReference(model, "lrp_se_input.npy", composite, $"lrp_se_{fixture}.npy");
    }

    /// <summary>A ConvNeXt block (the same script's CnNet): layer norm, permutes and the layer scale's product take
    /// autograd's gradient, GELU passes, the dense layers act on channels-last values, the residual sum splits in
    /// proportion.</summary>
    [Theory]
    [InlineData("epsilon-plus", LrpComposite.EpsilonPlus)]
    [InlineData("epsilon-gamma-box", LrpComposite.EpsilonGammaBox)]
    [InlineData("excitation-backprop", LrpComposite.ExcitationBackprop)]
    public void AConvNeXtBlockMatchesThePyTorchReference(string fixture, LrpComposite composite)
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("lrp_cn.onnx"), Mean = [0.5f, 0.5f, 0.5f], Std = [0.25f, 0.25f, 0.25f] });
        using var scope = NewDisposeScope();
        var ops = ((IModelGraphSource)model).Graph().Nodes.Select(n => n.Op).ToList();
        Assert.Contains(GraphOp.LayerNorm, ops);
        Assert.Contains(GraphOp.Permute, ops);
        Assert.Contains(GraphOp.Gelu, ops);
        LrpPadClipSigmoidTests.MatchesReference(model, "lrp_se_input.npy", composite, $"lrp_cn_{fixture}.npy");
    }

    [Fact]
    public void CaptumsConventionsRefuseThemByNode()
    {
        using var model = Load();
        var context = new AnalysisValidationContext(model.Layers, model.Capabilities, model);
        var errors = new Lrp().Validate(new LrpOptions { Convention = LrpConvention.Captum }, context).ToList();
        Assert.Contains(errors, e => e.StartsWith("lrp: node '") && e.Contains("(Silu) has no LRP rule here under convention: captum (convention: zennit takes it"));
        Assert.DoesNotContain(new Lrp().Validate(new LrpOptions(), context), e => e.Contains("no LRP rule"));
    }
}
