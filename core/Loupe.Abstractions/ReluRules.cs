using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Abstractions;

// The backward rules of ReluRule, shared by the model backends that implement IModelInterventions.OverrideRelu.

/// <summary>Identity whose backward passes only the positive part of the gradient. After a plain ReLU it gives guided
/// backprop (Springenberg et al. 2015, §3.4): ReLU's own backward then keeps the gradient where the forward input &gt; 0,
/// so the gradient passes where input &gt; 0 and gradient &gt; 0. Nothing is saved for backward: a custom function
/// holding the ReLU output and masking in its backward made guided backprop 1.3–1.5× its forward+backward.</summary>
public sealed class PositiveGradient : GuardedFunction<PositiveGradient>
{
    /// <inheritdoc/>
    public override string Name => "LoupePositiveGradient";
    /// <inheritdoc/>
    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars) => ((Tensor)vars[0]).alias();
    /// <inheritdoc/>
    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad) => [grad.clamp_min(0)];
}

/// <summary>ReLU with a DeconvNet backward: relu(gradient), whatever the forward input was (Zeiler &amp; Fergus 2014).</summary>
public sealed class DeconvRelu : GuardedFunction<DeconvRelu>
{
    /// <inheritdoc/>
    public override string Name => "LoupeDeconvRelu";
    /// <inheritdoc/>
    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars) => nn.functional.relu((Tensor)vars[0]);
    /// <inheritdoc/>
    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad) => [grad.clamp_min(0)];
}

/// <summary>ReLU whose backward is the gradient times sigmoid(β·x), x its input (<see cref="ReluRule.BetaSmooth"/>):
/// <c>apply(x, β)</c>. The forward is relu(x); x is kept for the backward.</summary>
public sealed class BetaSmoothRelu : GuardedFunction<BetaSmoothRelu>
{
    /// <inheritdoc/>
    public override string Name => "LoupeBetaSmoothRelu";
    /// <inheritdoc/>
    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var x = (Tensor)vars[0];
        ctx.save_for_backward([x]);
        ctx.save_data("beta", (double)vars[1]);
        return nn.functional.relu(x);
    }
    /// <inheritdoc/>
    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var x = ctx.get_saved_variables()[0];
        return [grad * (x * (double)ctx.get_data("beta")).sigmoid(), null!];
    }
}

