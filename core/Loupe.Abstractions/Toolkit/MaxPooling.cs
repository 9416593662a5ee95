using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>2-D max pooling with libtorch's values, indices and gradients, faster on NCHW batches; both backends pool
/// through it. libtorch 2.10's NCHW max-pool kernel is scalar (resnet18's stem pool at batch 1: ~5 ms of a 38 ms
/// forward; at batch 8, 29 ms of resnext50's 605 ms ONNX forward) while its channels-last kernel is vectorised over
/// channels, so an NCHW input is pooled through a channels-last copy and the result made NCHW again (1.3 ms at batch 1,
/// copies included). With gradients, the indices are kept and the backward scatters the output gradient to them
/// (<see cref="MaxPoolFunction"/>), as libtorch's own backward does (libtorch's channels-last backward is slower than
/// its NCHW one); that backward is itself differentiable, so second derivatives through the pool (ShapleyCAM's
/// Hessian-vector products) are libtorch's too. Inputs that are channels-last already, single-channel, not 4-D or not
/// floating point go to libtorch's own kernel.</summary>
public static class MaxPooling
{
    /// <summary>One pool's geometry: kernel, stride, padding, dilation (two values each) and ceil mode.</summary>
    sealed record Geometry(long[] Kernel, long[] Stride, long[] Padding, long[] Dilation, bool CeilMode);

    /// <summary><c>max_pool2d(x, kernel, stride, padding, dilation, ceilMode)</c>, as libtorch computes it.</summary>
    public static Tensor Pool2d(Tensor x, long[] kernel, long[] stride, long[] padding, long[] dilation, bool ceilMode)
    {
        if (!Faster(x)) return nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceilMode);
        var geometry = new Geometry(kernel, stride, padding, dilation, ceilMode);
        if (x.requires_grad && is_grad_enabled()) return MaxPoolFunction.Apply(x, geometry);
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(nn.functional.max_pool2d(ChannelsLast(x), kernel, stride, padding, dilation, ceilMode).contiguous());
    }

    /// <summary><c>max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceilMode)</c>, as libtorch computes it:
    /// the values and each one's flat index within its H×W plane. Without a gradient an NCHW input is pooled through
    /// channels-last (the indices are logical, the same in either layout); with one, libtorch's NCHW kernel runs (its
    /// backward is fast; the indices output has no gradient for the custom function to carry).</summary>
    public static (Tensor Values, Tensor Indices) Pool2dWithIndices(Tensor x, long[] kernel, long[] stride, long[] padding, long[] dilation, bool ceilMode)
    {
        if (!Faster(x) || x.requires_grad && is_grad_enabled()) return nn.functional.max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceilMode);
        using var scope = NewDisposeScope();
        var (values, indices) = nn.functional.max_pool2d_with_indices(ChannelsLast(x), kernel, stride, padding, dilation, ceilMode);
        return (scope.MoveToOuter(values.contiguous()), scope.MoveToOuter(indices.contiguous()));
    }

    /// <summary>Whether <paramref name="x"/> is pooled through channels-last: a contiguous NCHW floating-point batch of
    /// more than one channel (the class comment).</summary>
    static bool Faster(Tensor x) => x.dim() == 4 && x.shape[1] > 1 && x.is_contiguous() && x.is_floating_point();

    /// <summary>The same values in channels-last storage (NCHW shape).</summary>
    static Tensor ChannelsLast(Tensor x) => x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);

    /// <summary>Max pooling of an NCHW input through channels-last, differentiable: the backward scatters (adds) the
    /// output gradient to the input position each output took its maximum from — libtorch's rule, ties included (the
    /// first maximum in window order wins) — by an out-of-place scatter-add, which autograd differentiates in turn.</summary>
    sealed class MaxPoolFunction : GuardedFunction<MaxPoolFunction>
    {
        /// <summary>The indices saved by the forward running on this thread: TorchSharp keeps the managed tensor handed
        /// to <c>save_for_backward</c> (the saved variable holds its own reference), so it is disposed once apply
        /// returns.</summary>
        [ThreadStatic] static Tensor? t_saved;

        public override string Name => "LoupeMaxPool2d";

        public static Tensor Apply(Tensor x, Geometry geometry)
        {
            try { return apply(x, geometry); }
            finally
            {
                t_saved?.Dispose();
                t_saved = null;
            }
        }

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var x = (Tensor)vars[0];
            var p = (Geometry)vars[1];
            using var scope = NewDisposeScope();
            var (y, indices) = nn.functional.max_pool2d_with_indices(ChannelsLast(x), p.Kernel, p.Stride, p.Padding, p.Dilation, p.CeilMode);
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
            var input = zeros([n, c, h * w], dtype: grad.dtype).scatter_add(2, indices.view(n, c, -1), grad.reshape(n, c, -1));
            return [scope.MoveToOuter(input.view(n, c, h, w)), null!];
        }
    }
}
