using Loupe.Abstractions.Toolkit;
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
    static readonly AsyncLocal<double?> s_epsilon = new();

    /// <summary>Captum's default <c>eps</c> of DeepLift: where |Δin| is below it, a non-linearity keeps its own gradient.</summary>
    public const double DefaultEpsilon = 1e-10;

    /// <summary>The threshold on |Δin| below which the rules keep the function's own gradient (Captum DeepLift's
    /// <c>eps</c>): <see cref="DefaultEpsilon"/> unless a caller set another with <see cref="WithEpsilon"/>. Read when a
    /// rule's forward runs (the softmax rule keeps it for its backward).</summary>
    public static double Epsilon => s_epsilon.Value ?? DefaultEpsilon;

    /// <summary>Sets <see cref="Epsilon"/> for the calls that follow on this logical flow, until the result is disposed
    /// (DeepLift's <c>eps</c> option around its forward and backward).</summary>
    public static IDisposable WithEpsilon(double eps)
    {
        if (!(eps >= 0) || double.IsInfinity(eps)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "DeepLift's eps must be a finite value ≥ 0");
        var before = s_epsilon.Value;
        s_epsilon.Value = eps;
        return new Restore(() => s_epsilon.Value = before);
    }

    sealed class Restore(Action undo) : IDisposable
    {
        Action? _undo = undo;
        public void Dispose() { _undo?.Invoke(); _undo = null; }
    }

    /// <summary>Keeps detached copies for backward. TorchSharp holds the managed tensors handed to
    /// <c>save_for_backward</c>, so they are disposed once <c>apply</c> returns.</summary>
    internal static void Save(autograd.AutogradContext ctx, params Tensor[] tensors)
    {
        // detach() only: a contiguous() here would turn channels-last activations into NCHW copies.
        var kept = tensors.Select(t => { var c = t.detach(); c.DetachFromDisposeScope(); return c; }).ToList();
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
    /// the mean of the whole 2N-row gradient). Where |Δin| &lt; eps (<see cref="Rescale.Epsilon"/>) the function's own gradient is kept.</summary>
    public static Tensor Nonlinear(Tensor pre, Nonlinearity kind, long dim = -1)
    {
        if (pre.shape[0] % 2 != 0) throw new LoupeException($"the rescale rule needs a batch [inputs; references] with an even number of rows, got {pre.shape[0]}");
        return Run(() => kind == Nonlinearity.Softmax ? RescaleNonlinear.apply(pre, kind, dim) : RescaleElementwise.apply(pre, kind));
    }

    /// <summary>An element-wise non-linearity outside <see cref="Nonlinearity"/> (LeakyReLU, ELU: Captum's
    /// <c>nonlinear</c> rule covers them) under the rescale rule: forward <paramref name="f"/>(<paramref name="pre"/>),
    /// backward × Δout/Δin between the halves, or × <paramref name="derivative"/>(inputs' half) where |Δin| &lt; eps (<see cref="Rescale.Epsilon"/>).</summary>
    public static Tensor Elementwise(Tensor pre, Func<Tensor, Tensor> f, Func<Tensor, Tensor> derivative)
    {
        if (pre.shape[0] % 2 != 0) throw new LoupeException($"the rescale rule needs a batch [inputs; references] with an even number of rows, got {pre.shape[0]}");
        return Run(() => RescaleGiven.apply(pre, f, derivative));
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

    /// <summary>a − b for a batch [a; b] (half a batch): what <see cref="AfterInPlaceRelu"/> needs of a pre-activation
    /// that an in-place ReLU is about to overwrite.</summary>
    public static Tensor HalfDifference(Tensor pre)
    {
        if (pre.shape[0] % 2 != 0) throw new LoupeException($"the rescale rule needs a batch [inputs; references] with an even number of rows, got {pre.shape[0]}");
        long h = pre.shape[0] / 2;
        using var _ = no_grad();
        return pre.narrow(0, 0, h) - pre.narrow(0, h, h);
    }

    /// <summary>Adds a − b of a batch [a; b] to <paramref name="din"/> in place (outside autograd).</summary>
    public static void AddHalfDifference(Tensor din, Tensor x)
    {
        long h = x.shape[0] / 2;
        using var _ = no_grad();
        din.add_(x.narrow(0, 0, h)).sub_(x.narrow(0, h, h));
    }

    /// <summary>The rescale rule of a ReLU that already ran in place, without autograd: <paramref name="relu"/> is its
    /// buffer (relu of the sum of <paramref name="inputs"/>, the first of which owns that buffer) and
    /// <paramref name="din"/> the pre-activations' <see cref="HalfDifference"/> (consumed). The result is that buffer,
    /// whose backward sends the gradient times the multipliers to every input (a sum's derivative is 1 for each):
    /// no ReLU pass and no copy of the activations, only the multipliers' half-batch passes.</summary>
    public static Tensor AfterInPlaceRelu(Tensor relu, Tensor din, params Tensor[] inputs)
    {
        using var scope = NewDisposeScope();
        Tensor m;
        using (no_grad())
        {
            long h = relu.shape[0] / 2;
            var ya = relu.narrow(0, 0, h);
            var ratio = (ya - relu.narrow(0, h, h)).div_(din);                   // inf/nan where din = 0: replaced below
            m = where(din.abs_().lt(Epsilon), ya.gt(0).to(relu.dtype), ratio);      // ReLU's own gradient: relu(a) > 0 ⇔ a > 0
            din.Dispose();
        }
        return scope.MoveToOuter(Run(() => RescalePass.apply([m, .. inputs])));
    }

    /// <summary>The multipliers of an element-wise non-linearity f, computed in the forward from the pre-activations
    /// [a; b] and outputs [f(a); f(b)]: (f(a) − f(b)) / (a − b), or f′(a) where |a − b| &lt; 1e-10. One half-batch
    /// tensor serves both halves: where the halves differ by less than 1e-10, f′(a) and f′(b) agree (to float
    /// rounding for σ and tanh; for ReLU unless a and b lie within 1e-10 of 0 on either side of it, where the
    /// reference half gets f′(a) instead of Captum's f′(b)).</summary>
    internal static Tensor Multipliers(Tensor pre, Tensor y, Nonlinearity kind)
    {
        long h = pre.shape[0] / 2;
        return Multipliers(pre, y, a => kind switch
        {
            Nonlinearity.Relu => a.gt(0).to(y.dtype),
            Nonlinearity.Sigmoid => y.narrow(0, 0, h) * (1 - y.narrow(0, 0, h)),
            _ => 1 - y.narrow(0, 0, h).square(),
        });
    }

    /// <summary>Δout/Δin between the halves of [inputs; references], or <paramref name="own"/>(inputs' half) — the
    /// function's own derivative there — where |Δin| &lt; eps (<see cref="Rescale.Epsilon"/>).</summary>
    internal static Tensor Multipliers(Tensor pre, Tensor y, Func<Tensor, Tensor> own)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long h = pre.shape[0] / 2;
        var a = pre.narrow(0, 0, h);
        var din = a - pre.narrow(0, h, h);
        var ratio = (y.narrow(0, 0, h) - y.narrow(0, h, h)).div_(din);      // inf/nan where din = 0: replaced below
        var small = din.abs_().lt(Epsilon);
        return scope.MoveToOuter(where(small, own(a), ratio));
    }

    /// <summary>g (2N rows) times the half-batch <paramref name="m"/>, for both halves, in g's own memory layout.</summary>
    internal static Tensor TimesHalves(Tensor g, Tensor m)
    {
        using var scope = NewDisposeScope();
        long[] halves = [2, g.shape[0] / 2, .. g.shape.Skip(1)];
        return scope.MoveToOuter((g.reshape(halves) * m).reshape(g.shape));   // views for NCHW and channels-last alike
    }

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

/// <summary>Captum's <c>nonlinear</c> multipliers of ReLU, σ and tanh (see <see cref="Rescale.Nonlinear"/>): computed once
/// in the forward (<see cref="Rescale.Multipliers(Tensor, Tensor, Nonlinearity)"/>, half a batch, in the activations' layout), so the backward is one
/// product per element.</summary>
sealed class RescaleElementwise : GuardedFunction<RescaleElementwise>
{
    public override string Name => "LoupeRescaleElementwise";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var pre = (Tensor)vars[0];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var y = Rescale.Forward(pre, (Nonlinearity)vars[1], -1);
        Rescale.Save(ctx, Rescale.Multipliers(pre, y, (Nonlinearity)vars[1]));
        return scope.MoveToOuter(y);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        return [scope.MoveToOuter(Rescale.TimesHalves(grad, ctx.get_saved_variables()[0])), null!];
    }
}

/// <summary>The rescale rule of a caller's element-wise function (see <see cref="Rescale.Elementwise"/>).</summary>
sealed class RescaleGiven : GuardedFunction<RescaleGiven>
{
    public override string Name => "LoupeRescaleGiven";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var pre = (Tensor)vars[0];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var y = ((Func<Tensor, Tensor>)vars[1])(pre);
        Rescale.Save(ctx, Rescale.Multipliers(pre, y, (Func<Tensor, Tensor>)vars[2]));
        return scope.MoveToOuter(y);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        return [scope.MoveToOuter(Rescale.TimesHalves(grad, ctx.get_saved_variables()[0])), null!, null!];
    }
}

/// <summary>The rescale rule on a buffer an in-place ReLU already wrote (see <see cref="Rescale.AfterInPlaceRelu"/>):
/// arguments [multipliers; inputs...], forward the first input's buffer, backward the gradient times the multipliers
/// to each input.</summary>
sealed class RescalePass : GuardedFunction<RescalePass>
{
    public override string Name => "LoupeRescalePass";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        Rescale.Save(ctx, (Tensor)vars[0]);
        ctx.save_data("inputs", vars.Length - 1);
        return ((Tensor)vars[1]).alias();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var g = scope.MoveToOuter(Rescale.TimesHalves(grad, ctx.get_saved_variables()[0]));
        return [null!, .. Enumerable.Repeat(g, (int)ctx.get_data("inputs"))];
    }
}

/// <summary>Captum's <c>softmax</c> multipliers (see <see cref="Rescale.Nonlinear"/>).</summary>
sealed class RescaleNonlinear : GuardedFunction<RescaleNonlinear>
{
    public override string Name => "LoupeRescaleNonlinear";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var pre = (Tensor)vars[0];
        var kind = (Nonlinearity)vars[1];
        var dim = (long)vars[2];
        ctx.save_data("kind", kind);
        ctx.save_data("dim", dim);
        ctx.save_data("eps", Rescale.Epsilon);
        Rescale.Save(ctx, pre);
        return Rescale.Forward(pre, kind, dim);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var kind = (Nonlinearity)ctx.get_data("kind");
        var dim = (long)ctx.get_data("dim");
        var eps = (double)ctx.get_data("eps");
        var pre = ctx.get_saved_variables()[0];
        var halves = pre.chunk(2, 0);
        var din = halves[0] - halves[1];
        var dout = Rescale.Forward(halves[0], kind, dim) - Rescale.Forward(halves[1], kind, dim);
        var tiny = din.abs() < eps;
        var small = Rescale.Twice(tiny);
        var ratio = Rescale.Twice(dout / where(tiny, ones_like(din), din));
        var g = grad.contiguous();
        var r = where(small, Rescale.OwnGradient(pre, g, kind, dim), g * ratio);
        if (kind == Nonlinearity.Softmax) r = r - r.sum() / r.numel();   // Captum's softmax rule: over all 2N rows
        return [scope.MoveToOuter(r), null!, null!];   // one gradient per argument (kind and dim get none)
    }
}

/// <summary>Max pooling with Captum's DeepLift <c>maxpool</c> rule on a batch [inputs; references]: with y, y′ the two
/// halves' outputs and m = max(y, y′), the output gradient times [m − y′; y − m] is unpooled to each half's argmax
/// positions (max_unpool2d: written, not added, where windows overlap), the halves are added, and divided by
/// Δin = x − x′; where |Δin| &lt; eps (<see cref="Rescale.Epsilon"/>) the pool's own gradient is kept. The forward pools through a channels-last
/// view (libtorch's NCHW max-pool kernel is scalar) and keeps the output in the input's layout; Δout, Δin and the
/// |Δin| &lt; eps (<see cref="Rescale.Epsilon"/>) mask are made once there, so the backward is two scatters and three element-wise passes.</summary>
sealed class RescaleMaxPool2d : GuardedFunction<RescaleMaxPool2d>
{
    public override string Name => "LoupeRescaleMaxPool2d";

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        var p = (PoolGeometry)vars[1];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var pooled = x.dim() == 4 && x.shape[1] > 1 ? x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : x;
        var (y, indices) = nn.functional.max_pool2d_with_indices(pooled, p.Kernel, p.Stride, p.Padding, p.Dilation, p.CeilMode);
        long h = x.shape[0] / 2;
        var (y0, y1) = (y.narrow(0, 0, h), y.narrow(0, h, h));
        var m = maximum(y0, y1);
        var dout = cat([m - y1, y0 - m], 0);
        var din = (x.narrow(0, 0, h) - x.narrow(0, h, h)).contiguous();
        Rescale.Save(ctx, indices.contiguous(), dout, din, din.abs().lt(Rescale.Epsilon));
        return scope.MoveToOuter(x.is_contiguous() ? y.contiguous() : y);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor indices = saved[0], dout = saved[1], din = saved[2], small = saved[3];
        long n = indices.shape[0], c = indices.shape[1], hw = din.shape[2] * din.shape[3];
        long[] shape = [n, .. din.shape.Skip(1)];
        var at = indices.view(n, c, -1);
        var unpooled = zeros([n, c, hw], dtype: grad.dtype).scatter_(2, at, (grad * dout).contiguous().view(n, c, -1)).view(shape);
        var own = zeros([n, c, hw], dtype: grad.dtype).scatter_add_(2, at, grad.contiguous().view(n, c, -1));
        var spread = (unpooled.narrow(0, 0, n / 2) + unpooled.narrow(0, n / 2, n / 2)).div_(din);   // inf/nan where Δin = 0: replaced
        long[] halves = [2, n / 2, .. din.shape.Skip(1)];
        return [scope.MoveToOuter(where(small, own.view(halves), spread).view(shape)), null!];
    }
}
