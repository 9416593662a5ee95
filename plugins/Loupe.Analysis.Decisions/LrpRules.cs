using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Decisions;

/// <summary>LRP rules for layers with weights (Zennit's names).</summary>
public enum LrpRuleKind
{
    /// <summary>LRP-ε: R_i = x_i Σ_j w_ij R_j / stab(z_j) (Bach et al. 2015).</summary>
    Epsilon,
    /// <summary>Generalised LRP-γ: positive weights (and biases) amplified by γ, separately for positive and negative outputs (Montavon et al. 2019; Andéol et al. 2021).</summary>
    Gamma,
    /// <summary>LRP-αβ with α = 1, β = 0.</summary>
    Alpha1Beta0,
    /// <summary>LRP-αβ with α = 2, β = 1.</summary>
    Alpha2Beta1,
    /// <summary>z⁺: positive contributions only (Montavon et al. 2017); negative inputs meet negative weights.</summary>
    ZPlus,
    /// <summary>z^B for bounded inputs (the first layer): bounds low/high (Montavon et al. 2017).</summary>
    ZBox,
    /// <summary>Flat: inputs and weights replaced by ones, bias dropped (Lapuschkin et al. 2019).</summary>
    Flat,
    /// <summary>w²: inputs replaced by ones, weights and biases squared (Montavon et al. 2017).</summary>
    WSquare,
    /// <summary>LRP-αβ with any α ≥ 1 and β = α − 1 (Zennit's <c>AlphaBeta(alpha, beta)</c>, which requires α − β = 1):
    /// α times the positive contributions' share minus β times the negative ones'.</summary>
    AlphaBeta,
    /// <summary>The relevance passes unchanged (Zennit's <c>Pass</c>, Captum's <c>IdentityRule</c>): only for a layer whose
    /// output has its input's shape (a batch norm). Per layer only (<c>rules:</c>).</summary>
    Pass,
    /// <summary>Zennit's <c>TakesMost</c> for a max pool: each window's relevance shared by softmax(β·x) over the window
    /// instead of all to its maximum. Per layer only (<c>rules:</c>), Zennit convention.</summary>
    TakesMost,
}

/// <summary>A rule with its parameters. <see cref="Low"/>/<see cref="High"/> (z^B) are in model-input space, broadcastable to the input.</summary>
public sealed record LrpRule(LrpRuleKind Kind, double Epsilon = 1e-6, double Gamma = 0.25, Tensor? Low = null, Tensor? High = null)
{
    /// <summary>Zennit's <c>Pass</c>: the layer hands its relevance on unchanged (it must keep the shape: a batch norm
    /// that no canonizer merged, which Zennit's composites map to Pass); <see cref="Kind"/> is then not used.</summary>
    public bool Pass { get; init; }
    /// <summary>The layer's own gradient carries the relevance (a batch norm no canonizer merged, under Zennit's
    /// ExcitationBackprop, which maps no rule to it); <see cref="Kind"/> is then not used.</summary>
    public bool Gradient { get; init; }
    /// <summary>The stabiliser of the rules other than ε (Zennit's <c>stabilizer</c>, default 1e-6): z + s·sign(z).</summary>
    public double Stabilizer { get; init; } = 1e-6;
    /// <summary>The layer's bias taken as zero in the rule's modified forwards (Zennit's <c>zero_params='bias'</c>,
    /// Captum's <c>set_bias_to_zero</c>); the γ rule's choice between its positive and negative terms still reads the
    /// layer's own output, as Zennit's unmodified fifth forward does.</summary>
    public bool ZeroBias { get; init; }
    /// <summary>Captum's form of γ and α1β0 (<c>GammaRule</c>, <c>Alpha1_Beta0_Rule</c>): one forward of the unmodified
    /// input through the modified weights (w + γw⁺, or w⁺) and the layer's bias, stabilised by <see cref="Stabilizer"/>
    /// (Captum's 1e-9), relevance x ⊙ ∂z/∂x · R / z — without Zennit's separate terms for x⁻ and negative outputs.</summary>
    public bool Captum { get; init; }
    /// <summary>α of <see cref="LrpRuleKind.AlphaBeta"/> (β = α − 1).</summary>
    public double Alpha { get; init; } = 2;
    /// <summary>β of <see cref="LrpRuleKind.TakesMost"/> (Zennit's default 1).</summary>
    public double Beta { get; init; } = 1;
}

/// <summary>Relevance propagation over a <see cref="ModelGraph"/> (Bach et al. 2015), each rule as Zennit defines it:
/// outputs of modified forwards, relevance divided by the stabilised output, the gradient of the modified forward, times
/// the (modified) input. Operators without weights: ReLU, identity, flatten, reshape, concatenation and max pooling
/// pass relevance as their gradient does (unchanged, reshaped, split, to the maximum); average pooling and sums
/// (residual additions) distribute it in proportion to each input's contribution (Zennit's <c>Norm</c>, or LRP-ε
/// with <see cref="PoolEpsilon"/>).</summary>
public sealed class LrpPropagation(ModelGraph graph, Func<int, LrpRule?> ruleOf)
{
    /// <summary>The stabiliser of proportional rules (pools, sums): Zennit's 1e-6; Captum uses its ε.</summary>
    public double PoolEpsilon { get; init; } = 1e-6;
    /// <summary>Activations take their own gradient (Zennit's ExcitationBackprop, which maps no rule to them) instead
    /// of passing relevance on (Zennit's Pass, in every other composite, and Captum).</summary>
    public bool DifferentiateActivations { get; init; }

    /// <summary>Zennit's stabiliser: x + ε·sign(x), with sign(0) = +1.</summary>
    public static Tensor Stabilize(Tensor z, double epsilon) => z + (z.eq(0).to(z.dtype) + z.sign()) * epsilon;

    /// <summary>Propagates <paramref name="outputRelevance"/> (shape of the last node's output) back to the input.
    /// <paramref name="values"/> are the node outputs of <see cref="ModelGraph.Run"/> on <paramref name="input"/>;
    /// <paramref name="observe"/> sees each node's total output relevance, <paramref name="observeInputs"/> the relevance
    /// it hands each of its inputs.</summary>
    public Tensor Propagate(Tensor input, Tensor[] values, Tensor outputRelevance, Action<int, Tensor>? observe = null, Action<int, Tensor[]>? observeInputs = null)
    {
        var nodes = graph.Nodes;
        var relevance = new Tensor?[nodes.Count];
        relevance[^1] = outputRelevance;
        Tensor? inputRelevance = null;
        for (int i = nodes.Count - 1; i >= 0; i--)
        {
            if (relevance[i] is not { } r) continue;
            observe?.Invoke(i, r);
            var node = nodes[i];
            Tensor[] parts;
            // One scope per node: the modified forwards and their graphs are freed as soon as the node is done.
            using (var step = NewDisposeScope())
            {
                var xs = node.Inputs.Select(j => (j < 0 ? input : values[j]).detach()).ToArray();
                parts = Node(i, node, xs, r).Select(p => ReferenceEquals(p, r) ? p : step.MoveToOuter(p)).ToArray();
            }
            observeInputs?.Invoke(i, parts);
            for (int k = 0; k < parts.Length; k++)
            {
                int j = node.Inputs[k];
                if (j < 0) inputRelevance = inputRelevance is null ? parts[k] : inputRelevance + parts[k];
                else relevance[j] = relevance[j] is null ? parts[k] : relevance[j]! + parts[k];
            }
            relevance[i] = null;
        }
        return inputRelevance ?? zeros_like(input);
    }

    Tensor[] Node(int index, GraphNode node, Tensor[] xs, Tensor r)
    {
        switch (node.Op)
        {
            case GraphOp.Relu or GraphOp.Clip or GraphOp.Sigmoid or GraphOp.Silu or GraphOp.Hardswish or GraphOp.Hardsigmoid or GraphOp.Gelu when DifferentiateActivations:
                return Gradient(node, xs, r);
            case GraphOp.Relu or GraphOp.Identity or GraphOp.Clip or GraphOp.Sigmoid or GraphOp.Silu or GraphOp.Hardswish or GraphOp.Hardsigmoid or GraphOp.Gelu:
                return [r];                              // activations: Zennit's Pass rule (its Activation types)
            case GraphOp.Mul or GraphOp.LayerNorm or GraphOp.Permute:
                return Gradient(node, xs, r);            // operators no composite hooks: autograd's gradient of the relevance, as in Zennit
            case GraphOp.Pad:
                return Gradient(node, xs, r);            // identity on the kept region, the border's relevance dropped
            case GraphOp.Flatten or GraphOp.Reshape:
                return [r.reshape(xs[0].shape)];
            case GraphOp.MaxPool when ruleOf(index) is { Kind: LrpRuleKind.TakesMost } takesMost:
                return [TakesMost(node, xs[0], r, takesMost.Beta)];
            case GraphOp.MaxPool or GraphOp.AvgPool or GraphOp.AdaptiveAvgPool when ruleOf(index) is { } poolRule:
                return Proportional(node, xs, r, poolRule.Epsilon);   // a pool's own ε (Captum's EpsilonRule on it)
            case GraphOp.Concat or GraphOp.MaxPool or GraphOp.Narrow or GraphOp.ChannelShuffle:
                return Gradient(node, xs, r);            // selections and permutations: the relevance moves with its values
            case GraphOp.AvgPool or GraphOp.AdaptiveAvgPool or GraphOp.Add:
                return Proportional(node, xs, r, PoolEpsilon);
        }
        var rule = ruleOf(index) ?? new LrpRule(LrpRuleKind.Epsilon);
        if (rule.Gradient) return Gradient(node, xs, r);
        return rule.Pass || rule.Kind == LrpRuleKind.Pass ? [r] : [Layer(node, xs[0], r, rule)];
    }

    /// <summary>Zennit's TakesMost at a max pool (as its rules document it): with s = β·x, each window's maximum m and
    /// e = exp(s − U(m)), where U spreads each window's value over its inputs (a transposed convolution with ones, so an
    /// input in several overlapping windows gets their sum), the share e / (U(Σ_window e) + 1e-10) of U(R) — for windows
    /// that do not overlap, softmax(β·x) within the window times the window's relevance.</summary>
    static Tensor TakesMost(GraphNode node, Tensor x, Tensor r, double beta)
    {
        using var scope = NewDisposeScope();
        long c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var ones = torch.ones([c, 1, node.Kernel[0], node.Kernel[1]], dtype: x.dtype, device: x.device);
        var s = x * beta;
        var max = nn.functional.max_pool2d(s, node.Kernel, node.Stride, node.Padding, node.Dilation);
        long[] outputPadding = new[] { 0, 1 }.Select(d => (d == 0 ? h : w) - ((max.shape[2 + d] - 1) * node.Stride[d] - 2 * node.Padding[d] + node.Dilation[d] * (node.Kernel[d] - 1) + 1)).ToArray();
        Tensor Spread(Tensor t) => nn.functional.conv_transpose2d(t, ones, null, node.Stride, node.Padding, outputPadding, node.Dilation, c)
            .narrow(2, 0, h).narrow(3, 0, w);
        var e = (s - Spread(max)).exp();
        var sums = nn.functional.conv2d(e, ones, null, node.Stride, node.Padding, node.Dilation, c);
        return scope.MoveToOuter(e / (Spread(sums) + 1e-10) * Spread(r));
    }

    static Tensor[] Gradient(GraphNode node, Tensor[] xs, Tensor r)
    {
        var leaves = xs.Select(x => x.requires_grad_(true)).ToArray();
        var z = node.Apply(leaves);
        var g = CheckedOps.Grad([z], leaves, [r]);
        return g.ToArray();
    }

    /// <summary>LRP-ε on a parameter-free operator: R_k = x_k ⊙ ∂z/∂x_k · R / stab(z).</summary>
    static Tensor[] Proportional(GraphNode node, Tensor[] xs, Tensor r, double epsilon)
    {
        var leaves = xs.Select(x => x.requires_grad_(true)).ToArray();
        var z = node.Apply(leaves);
        var s = r / Stabilize(z.detach(), epsilon);
        var g = CheckedOps.Grad([z], leaves, [s]);
        return leaves.Select((x, k) => x.detach() * g[k]).ToArray();
    }

    /// <summary>One modified forward: its output and a closure giving ∂/∂input · s.</summary>
    sealed class Term(GraphNode node, Tensor x, Tensor? w, Tensor? b)
    {
        public readonly Tensor Input = x.detach().requires_grad_(true);
        public Tensor Output = null!;
        public Term Run() { Output = node.Apply([Input], w, b); return this; }
        public Tensor Grad(Tensor s) => CheckedOps.Grad([Output], [Input], [s], retainGraph: true)[0];
    }

    static Tensor Layer(GraphNode node, Tensor x, Tensor r, LrpRule rule)
    {
        var w = node.Weight!;
        var own = node.Bias;
        var b = rule.ZeroBias ? null : own;
        Tensor? Pos(Tensor? t) => t?.clamp_min(0);
        Tensor? Neg(Tensor? t) => t?.clamp_max(0);
        Term T(Tensor input, Tensor? weight, Tensor? bias) => new Term(node, input, weight, bias).Run();
        if (rule.Captum && rule.Kind is LrpRuleKind.Gamma or LrpRuleKind.Alpha1Beta0)
        {
            var t = T(x, rule.Kind == LrpRuleKind.Gamma ? w + rule.Gamma * Pos(w)! : Pos(w), b);
            return x * t.Grad(r / Stabilize(t.Output.detach(), rule.Stabilizer));
        }
        var xp = x.clamp_min(0);
        var xn = x.clamp_max(0);
        // Inputs without negative values (any layer after a ReLU): the terms of x⁻ are exactly zero (x⁻ = 0, no bias), so
        // the rules below skip their modified forwards and gradients — the same sums, half the passes.
        bool signed = rule.Kind is LrpRuleKind.ZPlus or LrpRuleKind.Alpha1Beta0 or LrpRuleKind.Alpha2Beta1 or LrpRuleKind.AlphaBeta or LrpRuleKind.Gamma
            && x.lt(0).any().item<bool>();
        Tensor Sum(Tensor? a, Tensor? b) => b is null ? a! : a! + b;
        double stab = rule.Stabilizer;
        switch (rule.Kind)
        {
            case LrpRuleKind.Epsilon:
            {
                var t = T(x, w, b);
                return t.Input.detach() * t.Grad(r / Stabilize(t.Output.detach(), rule.Epsilon));
            }
            case LrpRuleKind.ZPlus or LrpRuleKind.Alpha1Beta0:
            {
                var (t0, t1) = (T(xp, Pos(w), Pos(b)), signed ? T(xn, Neg(w), null) : null);
                var s = r / Stabilize(Sum(t0.Output, t1?.Output).detach(), stab);
                return Sum(xp * t0.Grad(s), t1 is null ? null : xn * t1.Grad(s));
            }
            case LrpRuleKind.Alpha2Beta1 or LrpRuleKind.AlphaBeta:
            {
                double alpha = rule.Kind == LrpRuleKind.Alpha2Beta1 ? 2 : rule.Alpha;
                var (t0, t2) = (T(xp, Pos(w), Pos(b)), T(xp, Neg(w), Neg(b)));
                var (t1, t3) = signed ? (T(xn, Neg(w), null), T(xn, Pos(w), null)) : (null, null);
                var sp = r / Stabilize(Sum(t0.Output, t1?.Output).detach(), stab);
                var sn = r / Stabilize(Sum(t2.Output, t3?.Output).detach(), stab);
                return alpha * Sum(xp * t0.Grad(sp), t1 is null ? null : xn * t1.Grad(sp)) - (alpha - 1) * Sum(xp * t2.Grad(sn), t3 is null ? null : xn * t3.Grad(sn));
            }
            case LrpRuleKind.Gamma:
            {
                var g = rule.Gamma;
                var wUp = w + g * Pos(w)!;
                var wDown = w + g * Neg(w)!;
                var t0 = T(xp, wUp, b is null ? null : b + g * Pos(b)!);
                var t1 = signed ? T(xn, wDown, null) : null;
                var t2 = T(xp, wDown, b is null ? null : b + g * Neg(b)!);
                var t3 = signed ? T(xn, wUp, null) : null;
                var z = node.Apply([x], w, own);
                var sp = z.gt(0).to(r.dtype) * r / Stabilize(Sum(t0.Output, t1?.Output).detach(), stab);
                var sn = z.lt(0).to(r.dtype) * r / Stabilize(Sum(t2.Output, t3?.Output).detach(), stab);
                return Sum(Sum(xp * t0.Grad(sp), t1 is null ? null : xn * t1.Grad(sp)), Sum(xp * t2.Grad(sn), t3 is null ? null : xn * t3.Grad(sn)));
            }
            case LrpRuleKind.ZBox:
            {
                if (rule.Low is null || rule.High is null) throw new LoupeException("lrp: the z-box rule needs low and high bounds");
                var low = rule.Low.expand(x.shape).contiguous();
                var high = rule.High.expand(x.shape).contiguous();
                var (t0, t1, t2) = (T(x, w, b), T(low, Pos(w), Pos(b)), T(high, Neg(w), Neg(b)));
                var s = r / Stabilize((t0.Output - t1.Output - t2.Output).detach(), stab);
                return x * t0.Grad(s) - low * t1.Grad(s) - high * t2.Grad(s);
            }
            case LrpRuleKind.WSquare:
            {
                var t = T(ones_like(x), w * w, b is null ? null : b * b);
                return t.Grad(r / Stabilize(t.Output.detach(), stab));
            }
            case LrpRuleKind.Flat:
            {
                var t = T(ones_like(x), ones_like(w), null);
                return t.Grad(r / Stabilize(t.Output.detach(), stab));
            }
            default: throw new LoupeException($"lrp: unknown rule {rule.Kind}");
        }
    }
}
