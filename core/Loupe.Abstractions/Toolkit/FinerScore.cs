using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Finer-CAM's contrastive score (Zhang et al. 2025; pytorch-grad-cam's FinerWeightedTarget), shared by the
/// <c>finer-cam</c> technique and the <c>finer</c> target: the class against its nearest competitors.</summary>
public static class FinerScore
{
    /// <summary>The compared classes of each row (N×ranks): the classes at <paramref name="ranks"/> when all are sorted by
    /// |z_k − z_c| (rank 0 is c itself), from the logits <paramref name="z"/> (N×classes) and the classes c (N).</summary>
    public static Tensor Compared(Tensor z, Tensor classes, IReadOnlyList<int> ranks)
    {
        using var scope = NewDisposeScope();
        var d = z.detach();
        var order = (d - d.gather(1, classes.unsqueeze(1))).abs().argsort(1);
        return scope.MoveToOuter(order.index_select(1, tensor(ranks.Select(r => (long)r).ToArray())));
    }

    /// <summary>Σ_r p_r (z_c − α z_r) / (Σ_r p_r + 1e-9) per row, p = softmax(z) (differentiable in z).</summary>
    public static Tensor Of(Tensor z, Tensor classes, Tensor compared, double alpha)
    {
        using var scope = NewDisposeScope();
        var yc = z.gather(1, classes.unsqueeze(1));
        var p = nn.functional.softmax(z, 1).gather(1, compared);
        return scope.MoveToOuter((p * (yc - alpha * z.gather(1, compared))).sum(1) / (p.sum(1) + 1e-9));
    }
}
