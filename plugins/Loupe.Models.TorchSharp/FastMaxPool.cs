using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Runs in place of a <see cref="MaxPool2d"/> (see <see cref="Rewrites"/>): the same values, indices and
/// gradients, faster on NCHW batches. libtorch 2.10's NCHW max-pool kernel is scalar (resnet18's stem pool at batch 1:
/// ~5 ms of a 38 ms forward) while its channels-last kernel is vectorised over channels, so an NCHW input is pooled
/// through a channels-last copy and the result made NCHW again (1.3 ms, copies included). With gradients, the indices
/// are kept and the backward scatters the output gradient to them (<see cref="MaxPoolFunction"/>), as libtorch's own
/// backward does: libtorch's channels-last backward is slower than its NCHW one. Inputs that are already channels-last,
/// single-channel or not 4-D go to libtorch's own kernel.</summary>
sealed class FastMaxPool : nn.Module<Tensor, Tensor>
{
    internal readonly long[] Kernel, Stride, Padding, Dilation;
    internal readonly bool CeilMode;

    public FastMaxPool(MaxPool2d pool) : base("MaxPool2d")
    {
        static long[] Pair(long[]? v, long[] fallback) => v is null || v.Length == 0 ? fallback : v.Length == 1 ? [v[0], v[0]] : v;
        Kernel = Pair(pool.kernel_size, [1, 1]);
        Stride = Pair(pool.stride, Kernel);
        Padding = Pair(pool.padding, [0, 0]);
        Dilation = Pair(pool.dilation, [1, 1]);
        CeilMode = pool.ceil_mode;
    }

    public override Tensor forward(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] == 1 || !x.is_contiguous())
            return nn.functional.max_pool2d(x, Kernel, Stride, Padding, Dilation, CeilMode);
        if (x.requires_grad && is_grad_enabled()) return MaxPoolFunction.Apply(x, this);
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(nn.functional.max_pool2d(TorchModel.ChannelsLast(x), Kernel, Stride, Padding, Dilation, CeilMode).contiguous());
    }
}

/// <summary>Max pooling of an NCHW input through channels-last, differentiable: the backward scatters (adds) the output
/// gradient to the input position each output took its maximum from — libtorch's rule, ties included (the first
/// maximum in window order wins). Not differentiable twice.</summary>
sealed class MaxPoolFunction : GuardedFunction<MaxPoolFunction>
{
    /// <summary>The indices saved by the forward running on this thread: TorchSharp keeps the managed tensor handed to
    /// <c>save_for_backward</c> (the saved variable holds its own reference), so it is disposed once apply returns.</summary>
    [ThreadStatic] static Tensor? t_saved;

    public override string Name => "LoupeMaxPool2d";

    public static Tensor Apply(Tensor x, FastMaxPool pool)
    {
        try { return apply(x, pool); }
        finally
        {
            t_saved?.Dispose();
            t_saved = null;
        }
    }

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var p = (FastMaxPool)vars[1];
        using var scope = NewDisposeScope();
        var (y, indices) = nn.functional.max_pool2d_with_indices(TorchModel.ChannelsLast(x), p.Kernel, p.Stride, p.Padding, p.Dilation, p.CeilMode);
        var saved = indices.contiguous();
        saved.DetachFromDisposeScope();
        t_saved = saved;
        ctx.save_for_backward([saved]);
        ctx.save_data("size", (x.shape[2], x.shape[3]));
        return scope.MoveToOuter(y.contiguous());
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var indices = ctx.get_saved_variables()[0];
        var (h, w) = ((long, long))ctx.get_data("size");
        long n = indices.shape[0], c = indices.shape[1];
        var input = zeros([n, c, h * w], dtype: grad.dtype).scatter_add_(2, indices.view(n, c, -1), grad.reshape(n, c, -1));
        return [scope.MoveToOuter(input.view(n, c, h, w)), null!];
    }
}
