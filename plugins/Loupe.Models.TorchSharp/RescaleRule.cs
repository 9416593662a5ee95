using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Saved tensors of the rescale functions: TorchSharp keeps the managed tensors handed to
/// <c>save_for_backward</c>, so they are disposed once <c>apply</c> returns (as <see cref="MaxPoolFunction"/>).</summary>
static class RescaleSaved
{
    [ThreadStatic] static List<Tensor>? t_saved;

    public static void Save(autograd.AutogradContext ctx, params Tensor[] tensors)
    {
        var kept = tensors.Select(t => { var c = t.detach().contiguous(); c.DetachFromDisposeScope(); return c; }).ToList();
        (t_saved ??= []).AddRange(kept);
        ctx.save_for_backward(kept);
    }

    public static Tensor Run(Func<Tensor> apply)
    {
        try { return apply(); }
        finally
        {
            if (t_saved is { } s) { foreach (var t in s) t.Dispose(); s.Clear(); }
        }
    }

    /// <summary>[a; a]: a half-batch value for both halves.</summary>
    public static Tensor Twice(Tensor a) => cat([a, a], 0);
}

/// <summary>ReLU with DeepLift's rescale backward (Shrikumar et al. 2017; Captum's <c>nonlinear</c>): the batch is
/// [inputs; references]; the gradient is multiplied by Δout/Δin = (relu(x) − relu(x′)) / (x − x′), or by the ReLU's own
/// derivative where |x − x′| &lt; 1e-10.</summary>
sealed class RescaleRelu : autograd.SingleTensorFunction<RescaleRelu>
{
    public override string Name => "LoupeRescaleRelu";
    public static Tensor Apply(Tensor pre) => RescaleSaved.Run(() => apply(pre));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var pre = (Tensor)vars[0];
        RescaleSaved.Save(ctx, pre);
        return nn.functional.relu(pre);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var pre = ctx.get_saved_variables()[0];
        var halves = pre.chunk(2, 0);
        var din = halves[0] - halves[1];
        var dout = nn.functional.relu(halves[0]) - nn.functional.relu(halves[1]);
        var small = RescaleSaved.Twice(din.abs() < 1e-10);
        var ratio = RescaleSaved.Twice(dout / where(din.abs() < 1e-10, ones_like(din), din));
        var g = grad.contiguous();
        return [scope.MoveToOuter(where(small, g * (pre > 0).to(g.dtype), g * ratio))];
    }
}

/// <summary>Max pooling with Captum's DeepLift <c>maxpool</c> rule on a batch [inputs; references]: with y, y′ the two
/// halves' outputs and m = max(y, y′), the output gradient times [m − y′; y − m] is unpooled to each half's argmax
/// positions (max_unpool2d), the halves are added, and divided by Δin = x − x′; where |Δin| &lt; 1e-10 the pool's own
/// gradient is kept.</summary>
sealed class RescaleMaxPool : autograd.SingleTensorFunction<RescaleMaxPool>
{
    public override string Name => "LoupeRescaleMaxPool";
    public static Tensor Apply(Tensor x, FastMaxPool pool) => RescaleSaved.Run(() => apply(x, pool));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var p = (FastMaxPool)vars[1];
        using var scope = NewDisposeScope();
        var (y, indices) = nn.functional.max_pool2d_with_indices(x.contiguous(), p.Kernel, p.Stride, p.Padding, p.Dilation, p.CeilMode);
        RescaleSaved.Save(ctx, x, y, indices);
        return scope.MoveToOuter(y.contiguous());
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], y = saved[1], indices = saved[2];
        long n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
        // max_unpool2d: each output's value written at its argmax (written, not added, where windows overlap).
        Tensor Unpool(Tensor v) => zeros([n, c, hw], dtype: v.dtype).scatter_(2, indices.view(n, c, -1), v.contiguous().view(n, c, -1)).view(x.shape);
        var xs = x.chunk(2, 0); var ys = y.chunk(2, 0);
        var din = RescaleSaved.Twice(xs[0] - xs[1]);
        var m = maximum(ys[0], ys[1]);
        var dout = cat([m - ys[1], ys[0] - m], 0);
        var u = Unpool(grad * dout).chunk(2, 0);
        var spread = RescaleSaved.Twice(u[0] + u[1]);
        // The pool's own gradient: the output gradient added at each output's argmax.
        var own = zeros([n, c, hw], dtype: grad.dtype).scatter_add_(2, indices.view(n, c, -1), grad.contiguous().view(n, c, -1)).view(x.shape);
        var safe = where(din.abs() < 1e-10, ones_like(din), din);
        return [scope.MoveToOuter(where(din.abs() < 1e-10, own, spread / safe)), null!];
    }
}

/// <summary>Installs the rescale rule on a module tree (see <see cref="ReluRule.Rescale"/>).</summary>
static class RescaleRule
{
    /// <summary>Hooks every ReLU module, the functional ReLU that ends TorchVision's residual blocks and every max pool.</summary>
    public static void Install(IReadOnlyDictionary<string, nn.Module> modules, Func<nn.Module, IReadOnlyList<nn.Module>> running, List<Action> removers)
    {
        foreach (var (name, module) in modules)
        {
            if (module is ReLU relu)
            {
                // The module gets an empty tensor (its output is replaced anyway); the rule reads the pre-activation.
                Tensor? pre = null;
                var h1 = relu.register_forward_pre_hook((_, input) => { pre = input; return empty(0, dtype: input.dtype); });
                var h2 = relu.register_forward_hook((_, _, _) => RescaleRelu.Apply(pre!));
                removers.Add(() => h1.remove()); removers.Add(() => h2.remove());
            }
            else if (module is MaxPool2d pool)
            {
                var fast = new FastMaxPool(pool);
                foreach (var r in running(pool).OfType<nn.Module<Tensor, Tensor>>())
                {
                    Tensor? input = null;
                    var h1 = r.register_forward_pre_hook((_, x) => { input = x; return x.detach(); });
                    var h2 = r.register_forward_hook((_, _, _) => RescaleMaxPool.Apply(input!, fast));
                    removers.Add(() => h1.remove()); removers.Add(() => h2.remove());
                }
            }
            else if (module.GetType().Name is "BasicBlock" or "Bottleneck" && module is nn.Module<Tensor, Tensor> block)
            {
                // out = relu(lastBn(...) + identity): the block adds and ReLUs a copy of the last batch norm's output in
                // place; the rule recomputes the sum from the kept output and the identity.
                var children = module.named_children().ToDictionary(c => c.name, c => c.module);
                var lastBn = children.GetValueOrDefault("bn3") ?? children.GetValueOrDefault("bn2")
                    ?? throw new LoupeException($"block '{name}' has no bn2/bn3: cannot apply the rescale rule to its ReLU");
                var down = children.GetValueOrDefault("downsample");
                Tensor? blockInput = null, bnOut = null, identity = null;
                var h1 = block.register_forward_pre_hook((_, input) => { blockInput = input; identity = null; return null!; });
                removers.Add(() => h1.remove());
                foreach (var bn in running(lastBn).OfType<nn.Module<Tensor, Tensor>>())
                {
                    var h2 = bn.register_forward_hook((_, _, output) => { bnOut = output; return output.detach().clone(); });
                    removers.Add(() => h2.remove());
                }
                foreach (var d in down is null ? [] : running(down).OfType<nn.Module<Tensor, Tensor>>())
                {
                    var h3 = d.register_forward_hook((_, _, output) => { identity = output; return null!; });
                    removers.Add(() => h3.remove());
                }
                var h4 = block.register_forward_hook((_, _, _) => RescaleRelu.Apply(bnOut! + (identity ?? blockInput!)));
                removers.Add(() => h4.remove());
            }
        }
    }
}
