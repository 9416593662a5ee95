using Loupe.Models.Onnx;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary><see cref="Ops.Linear"/> (the fused MatMul+Add of exported Linear layers) runs its rows as one 2-D GEMM
/// whatever the input's layout: values and input gradients equal libtorch's linear on a contiguous copy, for the
/// layouts the interpreter hands it (a transpose's view whose size-1 axis has a large stride, as vit_b_16's
/// in-projection input; batched rows; a non-viewable permutation, which the flattening copies).</summary>
public class LinearLayoutTests
{
    public static TheoryData<string> Layouts() => ["2-D", "1×T×C", "T×1×C transpose view", "T×B×C transpose view", "permuted 4-D", "1-D"];

    static Tensor Input(string layout)
    {
        var x = randn(2, 7, 5, 6, dtype: ScalarType.Float64);
        return layout switch
        {
            "2-D" => x[0, 0],
            "1×T×C" => x[0, 0].unsqueeze(0),
            "T×1×C transpose view" => x[0, 0].unsqueeze(0).transpose(0, 1),
            "T×B×C transpose view" => x[.., 0].transpose(0, 1),
            "permuted 4-D" => x.permute(1, 0, 2, 3),
            "1-D" => x[0, 0, 0],
            _ => throw new ArgumentException(layout),
        };
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void EqualsLinearOnAContiguousCopy(string layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var x = Input(layout).detach().requires_grad_(true);
        var (w, b) = (randn(4, 6, dtype: ScalarType.Float64), randn(4, dtype: ScalarType.Float64));
        var xc = x.detach().contiguous().requires_grad_(true);
        var y = Ops.Linear(x, w, b);
        var expected = F.linear(xc, w, b);
        Assert.Equal(expected.shape, y.shape);
        Assert.True((y - expected).abs().max().item<double>() <= 1e-12, $"{layout}: values differ");
        var g = randn_like(expected);
        var gx = CheckedOps.Grad([y], [x], [g])[0];
        var gxc = CheckedOps.Grad([expected], [xc], [g])[0];
        Assert.Equal(x.shape, gx.shape);
        Assert.True((gx - gxc).abs().max().item<double>() <= 1e-12, $"{layout}: input gradients differ");
    }

    [Fact]
    public void EmptyBatchesKeepTheirShape()
    {
        using var scope = NewDisposeScope();
        var (w, b) = (randn(4, 6), randn(4));
        Assert.Equal([0L, 5, 4], Ops.Linear(zeros(0, 5, 6), w, b).shape);
        Assert.Equal([3L, 0, 4], Ops.Linear(zeros(3, 0, 6), w, b).shape);
    }
}
