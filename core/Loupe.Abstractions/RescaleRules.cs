using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>Non-linearities that DeepLift's rescale rule covers (Captum's <c>SUPPORTED_NON_LINEAR</c>: ReLU, Sigmoid and
/// Tanh take its <c>nonlinear</c> rule, Softmax its <c>softmax</c> rule).</summary>
public enum Nonlinearity
{
    /// <summary>relu(x).</summary>
    Relu,
    /// <summary>σ(x).</summary>
    Sigmoid,
    /// <summary>tanh(x).</summary>
    Tanh,
    /// <summary>softmax over one dimension.</summary>
    Softmax,
}

/// <summary>DeepLift's rescale rule as custom autograd functions over a batch [inputs; references] (2N rows), shared by
/// the model backends that implement <see cref="ReluRule.Rescale"/>: the TorchSharp backend hooks its modules, the
/// onnx interpreter its nodes. The backwards only do tensor arithmetic whose shapes were fixed in the forward (an
/// exception inside a custom backward would kill the process).</summary>
public static class Rescale
{
    [ThreadStatic] static List<Tensor>? t_saved;

    /// <summary>Keeps detached copies for backward. TorchSharp holds the managed tensors handed to
    /// <c>save_for_backward</c>, so they are disposed once <c>apply</c> returns.</summary>
    internal static void Save(autograd.AutogradContext ctx, params Tensor[] tensors)
    {
        var kept = tensors.Select(t => { var c = t.detach().contiguous(); c.DetachFromDisposeScope(); return c; }).ToList();
        (t_saved ??= []).AddRange(kept);
        ctx.save_for_backward(kept);
    }

    static Tensor Run(Func<Tensor> apply)
    {
        try { return apply(); }
        finally
        {
            if (t_saved is { } s) { foreach (var t in s) t.Dispose(); s.Clear(); }
        }
    }

    /// <summary>[a; a]: a half-batch value for both halves.</summary>
    internal static Tensor Twice(Tensor a) => cat([a, a], 0);

    /// <summary><paramref name="kind"/>(<paramref name="pre"/>) whose backward multiplies by Δout/Δin between the halves
    /// (Captum's <c>nonlinear</c>; for softmax over <paramref name="dim"/> its <c>softmax</c> rule, which then subtracts
    /// the mean of the whole 2N-row gradient). Where |Δin| &lt; 1e-10 the function's own gradient is kept.</summary>
    public static Tensor Nonlinear(Tensor pre, Nonlinearity kind, long dim = -1)
    {
        if (pre.shape[0] % 2 != 0) throw new LoupeException($"the rescale rule needs a batch [inputs; references] with an even number of rows, got {pre.shape[0]}");
        return Run(() => RescaleNonlinear.apply(pre, kind, dim));
    }

    /// <summary>2-D max pooling whose backward is Captum's DeepLift <c>maxpool</c> rule (see <see cref="RescaleMaxPool2d"/>).</summary>
    public static Tensor MaxPool2d(Tensor x, long[] kernel, long[] stride, long[] padding, long[] dilation, bool ceilMode)
    {
        if (x.shape[0] % 2 != 0) throw new LoupeException($"the rescale rule needs a batch [inputs; references] with an even number of rows, got {x.shape[0]}");
        return Run(() => RescaleMaxPool2d.apply(x, new PoolGeometry(kernel, stride, padding, dilation, ceilMode)));
    }

    internal static Tensor Forward(Tensor x, Nonlinearity kind, long dim) => kind switch
    {
        Nonlinearity.Relu => nn.functional.relu(x),
        Nonlinearity.Sigmoid => x.sigmoid(),
        Nonlinearity.Tanh => x.tanh(),
        _ => x.softmax(dim),
    };

    /// <summary>The function's own vector-Jacobian product g·∂f/∂x at <paramref name="x"/>.</summary>
    internal static Tensor OwnGradient(Tensor x, Tensor g, Nonlinearity kind, long dim)
    {
        switch (kind)
        {
            case Nonlinearity.Relu: return g * (x > 0).to(g.dtype);
            case Nonlinearity.Sigmoid: { var s = x.sigmoid(); return g * s * (1 - s); }
            case Nonlinearity.Tanh: { var t = x.tanh(); return g * (1 - t * t); }
            default: { var s = x.softmax(dim); return s * (g - (g * s).sum(dim, keepdim: true)); }
        }
    }
}

/// <summary>Kernel, stride, padding, dilation and ceil mode of a 2-D max pool.</summary>
/// <param name="Kernel">Window (h, w).</param>
/// <param name="Stride">Stride (h, w).</param>
/// <param name="Padding">Symmetric padding (h, w).</param>
/// <param name="Dilation">Dilation (h, w).</param>
/// <param name="CeilMode">Ceil instead of floor for the output size.</param>
public sealed record PoolGeometry(long[] Kernel, long[] Stride, long[] Padding, long[] Dilation, bool CeilMode);

/// <summary>Captum's <c>nonlinear</c> / <c>softmax</c> multipliers (see <see cref="Rescale.Nonlinear"/>).</summary>
sealed class RescaleNonlinear : autograd.SingleTensorFunction<RescaleNonlinear>
{
    public override string Name => "LoupeRescaleNonlinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var pre = (Tensor)vars[0];
        var kind = (Nonlinearity)vars[1];
        var dim = (long)vars[2];
        ctx.save_data("kind", kind);
        ctx.save_data("dim", dim);
        Rescale.Save(ctx, pre);
        return Rescale.Forward(pre, kind, dim);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var kind = (Nonlinearity)ctx.get_data("kind");
        var dim = (long)ctx.get_data("dim");
        var pre = ctx.get_saved_variables()[0];
        var halves = pre.chunk(2, 0);
        var din = halves[0] - halves[1];
        var dout = Rescale.Forward(halves[0], kind, dim) - Rescale.Forward(halves[1], kind, dim);
        var small = Rescale.Twice(din.abs() < 1e-10);
        var ratio = Rescale.Twice(dout / where(din.abs() < 1e-10, ones_like(din), din));
        var g = grad.contiguous();
        var r = where(small, Rescale.OwnGradient(pre, g, kind, dim), g * ratio);
        if (kind == Nonlinearity.Softmax) r = r - r.sum() / r.numel();   // Captum's softmax rule: over all 2N rows
        return [scope.MoveToOuter(r), null!, null!];   // one gradient per argument (kind and dim get none)
    }
}

/// <summary>Max pooling with Captum's DeepLift <c>maxpool</c> rule on a batch [inputs; references]: with y, y′ the two
/// halves' outputs and m = max(y, y′), the output gradient times [m − y′; y − m] is unpooled to each half's argmax
/// positions (max_unpool2d: written, not added, where windows overlap), the halves are added, and divided by
/// Δin = x − x′; where |Δin| &lt; 1e-10 the pool's own gradient is kept.</summary>
sealed class RescaleMaxPool2d : autograd.SingleTensorFunction<RescaleMaxPool2d>
{
    public override string Name => "LoupeRescaleMaxPool2d";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var p = (PoolGeometry)vars[1];
        using var scope = NewDisposeScope();
        var (y, indices) = nn.functional.max_pool2d_with_indices(x.contiguous(), p.Kernel, p.Stride, p.Padding, p.Dilation, p.CeilMode);
        Rescale.Save(ctx, x, y, indices);
        return scope.MoveToOuter(y.contiguous());
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], y = saved[1], indices = saved[2];
        long n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
        Tensor Unpool(Tensor v) => zeros([n, c, hw], dtype: v.dtype).scatter_(2, indices.view(n, c, -1), v.contiguous().view(n, c, -1)).view(x.shape);
        var xs = x.chunk(2, 0); var ys = y.chunk(2, 0);
        var din = Rescale.Twice(xs[0] - xs[1]);
        var m = maximum(ys[0], ys[1]);
        var dout = cat([m - ys[1], ys[0] - m], 0);
        var u = Unpool(grad * dout).chunk(2, 0);
        var spread = Rescale.Twice(u[0] + u[1]);
        var own = zeros([n, c, hw], dtype: grad.dtype).scatter_add_(2, indices.view(n, c, -1), grad.contiguous().view(n, c, -1)).view(x.shape);
        var safe = where(din.abs() < 1e-10, ones_like(din), din);
        return [scope.MoveToOuter(where(din.abs() < 1e-10, own, spread / safe)), null!];
    }
}
