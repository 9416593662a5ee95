using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>The fused plan (MatMul + bias → linear, the exported exact GELU → gelu): which groups it fuses, that it
/// computes what the node-by-node plan computes, and that reading a value inside a fused group runs the node-by-node
/// plan (the value is still a layer). Against PyTorch, FamilyTests covers it on every family.</summary>
public class FusionTests
{
    const string Fc1 = "/encoder/layers/encoder_layer_0/mlp/mlp.0/Add_output_0";
    const string Erf = "/encoder/layers/encoder_layer_0/mlp/mlp.1/Erf_output_0";
    const string Gelu = "/encoder/layers/encoder_layer_0/mlp/mlp.1/Mul_1_output_0";
    const string InProj = "/encoder/layers/encoder_layer_0/self_attention/MatMul_output_0";

    [Fact]
    public void ViTMlpsAndProjectionsAreFusedAndComputeTheSameFunction()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "vit.onnx") });
        // Per block: 3 MatMul+Add pairs (in-projection, mlp.0, mlp.3) lose one node each, the GELU loses 4 of its 5,
        // the q, k, v Slices of the packed in-projection become one split.
        Assert.Equal(model.RuntimeNodeCount - 2 * (3 + 4 + 2), model.FusedNodeCount);
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 32 * 32), [2, 3, 32, 32]).requires_grad_(true);
        var fused = model.Forward(x);
        var gFused = CheckedOps.Grad([fused[.., 3].sum()], [x])[0];
        // Erf and InProj are inside fused groups: capturing them runs the node-by-node plan.
        using var cap = model.Capture([Erf, Fc1, Gelu, InProj], forGradients: false);
        var y = model.Forward(x);
        var g = CheckedOps.Grad([y[.., 3].sum()], [x])[0];
        var (erf, fc1, gelu) = (cap[Erf], cap[Fc1], cap[Gelu]);
        Assert.Equal([17L, 2, 48], cap[InProj].shape);   // the in-projection before its bias: tokens first, 3 × 16
        Assert.True(Env.RelL2(Env.Data(fused), Env.Data(y)) <= 1e-6, "fused logits differ from the node-by-node plan");
        Assert.True(Env.RelL2(Env.Data(gFused), Env.Data(g)) <= 1e-5, "fused input gradient differs from the node-by-node plan");
        Assert.True(Env.RelL2(Env.Data(erf), Env.Data(special.erf(fc1 / Math.Sqrt(2)))) <= 1e-6);
        Assert.True(Env.RelL2(Env.Data(gelu), Env.Data(fc1 * 0.5 * (1 + special.erf(fc1 / Math.Sqrt(2))))) <= 1e-6);
    }

    [Fact]
    public void QkvSlicesRunAsOneSplitWithTheSameValuesAndGradients()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "vit.onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 32 * 32), [2, 3, 32, 32]);
        var ops = model.ProfileByOperator(x, 1, fused: true).ToDictionary(t => t.Op, t => t.Nodes);
        Assert.Equal(2, ops["Slice (split)"]);   // one per block; no Slice of the in-projections is left
        Assert.Equal(model.ProfileByOperator(x, 1, fused: false).Single(t => t.Op == "Slice").Nodes - 6, ops.GetValueOrDefault("Slice"));
        // The q, k, v pieces are layers of both plans; capturing them (for gradients) keeps the fused plan.
        string[] qkv = ["Slice_output_0", "Slice_1_output_0", "Slice_2_output_0"];
        qkv = qkv.Select(v => "/encoder/layers/encoder_layer_1/self_attention/" + v).ToArray();
        (float[] Y, float[] Gx, float[][] Pieces, float[][] Grads) Run(bool nodeByNode)
        {
            var xi = x.detach().requires_grad_(true);
            using var cap = model.Capture(qkv, forGradients: true);
            using var inner = nodeByNode ? model.Capture([Erf], forGradients: false) : null;   // forces the node-by-node plan
            var y = model.Forward(xi);
            var wrt = qkv.Select(v => cap[v]).Prepend(xi).ToArray();
            var g = CheckedOps.Grad([(y * y).sum()], wrt);
            return (Env.Data(y), Env.Data(g[0]), qkv.Select(v => Env.Data(cap[v])).ToArray(), g.Skip(1).Select(Env.Data).ToArray());
        }
        var fused = Run(false);
        var plain = Run(true);
        // The node-by-node plan also unfuses linear and GELU (float rounding); the split itself is exact (SplitTests).
        Assert.True(Env.RelL2(fused.Y, plain.Y) <= 1e-6, $"logits: rel-L2 {Env.RelL2(fused.Y, plain.Y)}");
        for (int i = 0; i < 3; i++)
        {
            Assert.True(Env.RelL2(fused.Pieces[i], plain.Pieces[i]) <= 1e-6, $"{qkv[i]}: rel-L2 {Env.RelL2(fused.Pieces[i], plain.Pieces[i])}");
            Assert.True(Env.RelL2(fused.Grads[i], plain.Grads[i]) <= 1e-5, $"gradient at {qkv[i]}: rel-L2 {Env.RelL2(fused.Grads[i], plain.Grads[i])}");
        }
        Assert.True(Env.RelL2(fused.Gx, plain.Gx) <= 1e-5, $"input gradient: rel-L2 {Env.RelL2(fused.Gx, plain.Gx)}");
    }

    [Fact]
    public void AnInterventionInsideAFusedGroupTakesEffect()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "vit.onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 32 * 32), [2, 3, 32, 32]);
        using var _ = no_grad();
        var before = Env.Data(model.Forward(x));
        float[] zeroed;
        using (model.Intervene(Erf, t => zeros_like(t)))   // erf ≡ 0: GELU becomes x/2
            zeroed = Env.Data(model.Forward(x));
        Assert.True(Env.RelL2(zeroed, before) > 1e-3, "the intervention inside the fused GELU had no effect");
        Assert.Equal(before, Env.Data(model.Forward(x)));
    }
}
