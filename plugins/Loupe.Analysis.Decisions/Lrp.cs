using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Zennit's composites: which rule each layer gets, by type and position.</summary>
public enum LrpComposite
{
    /// <summary>z⁺ on convolutions, ε on dense layers.</summary>
    EpsilonPlus,
    /// <summary>z^B on the first convolution, γ on the other convolutions, ε on dense layers.</summary>
    EpsilonGammaBox,
    /// <summary>α2β1 on convolutions, ε on dense layers.</summary>
    EpsilonAlpha2Beta1,
    /// <summary>Flat on the first layer with weights (convolution or dense), z⁺ on convolutions, ε on dense layers.</summary>
    EpsilonPlusFlat,
    /// <summary>Flat on the first layer with weights, α2β1 on convolutions, ε on dense layers.</summary>
    EpsilonAlpha2Beta1Flat,
    /// <summary>One rule (<c>rule:</c>) on every convolution and dense layer.</summary>
    Uniform,
}

/// <summary>Whose conventions the map follows.</summary>
public enum LrpConvention
{
    /// <summary>Zennit: the target's output gradient (one-hot for a class logit) is the output relevance; rules from the composite.</summary>
    Zennit,
    /// <summary>Captum's <c>LRP</c> defaults: ε (1e-9) on convolutions, dense layers and pools, ReLUs passed, and the
    /// relevance scaled by the target's output (so it sums to about the logit).</summary>
    Captum,
}

/// <summary>Options of <c>lrp</c>.</summary>
public sealed record LrpOptions
{
    /// <summary>Composite.</summary>
    [Description("Zennit composite assigning rules per layer type and position: epsilon-plus (default), epsilon-gamma-box, epsilon-alpha2-beta1, epsilon-plus-flat, epsilon-alpha2-beta1-flat, or uniform (rule: on every layer with weights)")]
    public LrpComposite? Composite { get; init; }
    /// <summary>Rule of composite: uniform.</summary>
    [Description("the rule of every convolution and dense layer (sets composite: uniform): epsilon, gamma, alpha1-beta0, alpha2-beta1, z-plus, z-box, flat or w-square")]
    public LrpRuleKind? Rule { get; init; }
    /// <summary>Rule of the first layer with weights.</summary>
    [Description("overrides the rule of the first layer with weights (e.g. z-box for pixels, flat, w-square)")]
    public LrpRuleKind? FirstRule { get; init; }
    /// <summary>Conventions.</summary>
    [Description("zennit (relevance 1 at the target; the composite's rules) or captum (Captum LRP's defaults: ε everywhere, relevance × the target's output)")]
    public LrpConvention Convention { get; init; } = LrpConvention.Zennit;
    /// <summary>ε.</summary>
    [Range(0, 1e6), Description("ε of the epsilon rule (default 1e-6, Zennit's; 1e-9 under convention: captum, also on pools)")]
    public double? Epsilon { get; init; }
    /// <summary>γ.</summary>
    [Range(0, 1e6), Description("γ of the gamma rule (Zennit's default 0.25)")]
    public double Gamma { get; init; } = 0.25;
    /// <summary>Inputs per propagation.</summary>
    [Range(1, 100_000), Description("inputs per forward and relevance pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb; a batch above it is split, with the same maps)")]
    public int? InternalBatchSize { get; init; }
    /// <summary>Lowest pixel.</summary>
    [Description("z-box: lowest possible pixel value in [0,1] pixel space (normalised with the model's mean/std)")]
    public double Low { get; init; } = 0;
    /// <summary>Highest pixel.</summary>
    [Description("z-box: highest possible pixel value in pixel space")]
    public double High { get; init; } = 1;
}

/// <summary>Layer-wise relevance propagation (Bach et al. 2015) on the model's graph (<see cref="ModelCapabilities.Graph"/>,
/// both backends), with Zennit's rules and composites or Captum's defaults. The graph is canonized first: batch norms
/// merged into the convolution or dense layer before them (Zennit's <c>MergeBatchNorm</c>); residual sums split
/// relevance in proportion to their inputs (Zennit's <c>ResNetCanonizer</c> + <c>Norm</c>); concatenations split it
/// by slice. The map is the relevance of each input value (N×C×H×W).</summary>
public sealed class Lrp : AttributionAnalysis<LrpOptions>
{
    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Graph);
    /// <inheritdoc/>
    public override string ArtifactName => "lrp";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(LrpOptions options, AnalysisValidationContext context)
    {
        if (options.Composite is { } c && options.Rule is not null && c != LrpComposite.Uniform)
            yield return $"lrp: rule: applies to composite: uniform, not {c}; set one of them";
        if (options.Composite == LrpComposite.Uniform && options.Rule is null)
            yield return "lrp: composite: uniform needs rule:";
        if (options.Convention == LrpConvention.Captum && (options.Composite is not null || options.Rule is not null || options.FirstRule is not null))
            yield return "lrp: convention: captum assigns Captum's rules (ε everywhere); leave composite, rule and first_rule unset";
        if (options.High <= options.Low) yield return $"lrp: high ({options.High}) must be above low ({options.Low})";
        string? error = null;
        if (context.Model is IModelGraphSource source)
        {
            try { source.Graph(); }
            catch (LoupeException e) { error = $"lrp: the model has no graph form: {e.Message}"; }
        }
        if (error is not null) yield return error;
    }

    /// <summary>Canonizes a graph: each batch norm fed only by a convolution/dense layer is merged into it (the batch
    /// norm becomes an identity); any other batch norm becomes a depthwise 1×1 convolution, returned in
    /// <paramref name="standalone"/> (Zennit convention: Pass, as its composites map BatchNorm; captum convention: LRP-ε,
    /// as Captum's EpsilonRule on BatchNorm2d). Tensors made here belong to the caller's dispose scope.</summary>
    public static ModelGraph Canonize(ModelGraph graph, out HashSet<int> standalone) => graph.FoldBatchNorms(out standalone);

    /// <summary>The rule of each node under <paramref name="options"/> (null for nodes without weights).</summary>
    public static Func<int, LrpRule?> Rules(ModelGraph graph, HashSet<int> standalone, LrpOptions options, InputSpec spec, long channels)
    {
        var nodes = graph.Nodes;
        int firstConv = Enumerable.Range(0, nodes.Count).FirstOrDefault(i => nodes[i].Op == GraphOp.Conv && !standalone.Contains(i), -1);
        int firstLayer = Enumerable.Range(0, nodes.Count).FirstOrDefault(i => nodes[i].IsLinearLayer && !standalone.Contains(i), -1);
        double eps = options.Epsilon ?? (options.Convention == LrpConvention.Captum ? 1e-9 : 1e-6);
        var mean = tensor(spec.Mean.Take((int)channels).ToArray()).view(1, -1, 1, 1);
        var std = tensor(spec.Std.Take((int)channels).ToArray()).view(1, -1, 1, 1);
        LrpRule Make(LrpRuleKind kind) => new(kind, eps, options.Gamma,
            kind == LrpRuleKind.ZBox ? (mean.neg() + options.Low) / std : null, kind == LrpRuleKind.ZBox ? (mean.neg() + options.High) / std : null);
        if (options.Convention == LrpConvention.Captum) return i => nodes[i].IsLinearLayer ? Make(LrpRuleKind.Epsilon) : null;
        var composite = options.Composite ?? (options.Rule is null ? LrpComposite.EpsilonPlus : LrpComposite.Uniform);
        LrpRuleKind? conv = composite switch
        {
            LrpComposite.EpsilonPlus or LrpComposite.EpsilonPlusFlat => LrpRuleKind.ZPlus,
            LrpComposite.EpsilonGammaBox => LrpRuleKind.Gamma,
            LrpComposite.EpsilonAlpha2Beta1 or LrpComposite.EpsilonAlpha2Beta1Flat => LrpRuleKind.Alpha2Beta1,
            _ => options.Rule,
        };
        LrpRuleKind? dense = composite == LrpComposite.Uniform ? options.Rule : LrpRuleKind.Epsilon;
        var (firstIndex, firstKind) = composite switch
        {
            LrpComposite.EpsilonGammaBox => (firstConv, (LrpRuleKind?)LrpRuleKind.ZBox),
            LrpComposite.EpsilonPlusFlat or LrpComposite.EpsilonAlpha2Beta1Flat => (firstLayer, LrpRuleKind.Flat),
            _ => (-1, null),
        };
        if (options.FirstRule is { } fr) (firstIndex, firstKind) = (firstLayer, fr);
        return i =>
        {
            var n = nodes[i];
            if (!n.IsLinearLayer) return null;
            // A batch norm no canonizer merged (pre-activation blocks, after a concatenation): Zennit's composites map
            // BatchNorm to Pass (until 2026-12-05 Loupe gave it LRP-ε, whose shift absorbed relevance).
            if (standalone.Contains(i)) return new LrpRule(LrpRuleKind.Epsilon, eps) { Pass = true };
            if (i == firstIndex && firstKind is { } f) return Make(f);
            return Make((n.Op == GraphOp.Conv ? conv : dense) ?? LrpRuleKind.Epsilon);
        };
    }

    /// <summary>LRP maps of <paramref name="x"/> for <paramref name="selection"/> (the target's scores of the output).</summary>
    public static Tensor Attribute(IAnalysisContext ctx, LrpOptions options, Tensor x, TargetSelection selection, Tensor modelOutput)
    {
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(Relevance(ctx.Model, ctx.Input, options, x, OutputRelevance(ctx, options, modelOutput, selection), modelOutput));
    }

    /// <summary>The relevance the target puts on the model output: its scores' gradient (one-hot for a class logit),
    /// times the scores under convention: captum.</summary>
    static Tensor OutputRelevance(IAnalysisContext ctx, LrpOptions options, Tensor output, TargetSelection selection)
    {
        if (ctx.Target.RequiredLayers.Count > 0) throw new LoupeException($"lrp: explains model outputs; the target reads layers ({string.Join(", ", ctx.Target.RequiredLayers)})");
        using var scope = NewDisposeScope();
        var o = output.detach().requires_grad_(true);
        var scores = ctx.Target.Scores(new TargetInput(o, l => throw new LoupeException($"lrp: no layer '{l}'")), selection);
        var relevance = autograd.grad([scores.sum()], [o])[0];
        if (options.Convention == LrpConvention.Captum)
            relevance = relevance * scores.detach().view([-1, .. Enumerable.Repeat(1L, (int)o.dim() - 1)]);
        return scope.MoveToOuter(relevance);
    }

    /// <summary>Propagates <paramref name="outputRelevance"/> (shape of the model output) to the input through the
    /// model's canonized graph; <paramref name="modelOutput"/> (the model's own output on <paramref name="x"/>) checks
    /// that the graph reproduces the model. <paramref name="observe"/> sees each node's output relevance.</summary>
    public static Tensor Relevance(IModel model, InputSpec spec, LrpOptions options, Tensor x, Tensor outputRelevance, Tensor modelOutput, Action<int, Tensor>? observe = null)
    {
        using var scope = NewDisposeScope();
        var pass = GraphPass.Run(model, x);
        pass.Check(modelOutput);
        return scope.MoveToOuter(pass.Propagate(spec, options, outputRelevance, observe));
    }

    /// <summary>One no-grad run of the canonized graph on an input (in <see cref="ModelGraph.PreferredLayout"/>): the
    /// node values the rules read, and the output the target can be selected on.</summary>
    sealed class GraphPass
    {
        public required ModelGraph Graph { get; init; }
        public required HashSet<int> Standalone { get; init; }
        public required Tensor Input { get; init; }
        public required Tensor[] Values { get; init; }
        public Tensor Output => Values[^1];

        public static GraphPass Run(IModel model, Tensor x)
        {
            if (model is not IModelGraphSource source) throw new LoupeException("lrp: the model has no graph form (capability graph)");
            var graph = Canonize(source.Graph(), out var standalone);
            var input = ModelGraph.PreferredLayout(x.detach());
            using (no_grad()) return new GraphPass { Graph = graph, Standalone = standalone, Input = input, Values = graph.Run(input) };
        }

        /// <summary>Throws unless the graph's output matches the model's (1e-3 of the largest output).</summary>
        public void Check(Tensor modelOutput)
        {
            var tolerance = 1e-3 * (modelOutput.abs().max().item<float>() + 1e-6);
            if (!Output.shape.SequenceEqual(modelOutput.shape) || (Output - modelOutput.detach()).abs().max().item<float>() > tolerance)
                throw new LoupeException("lrp: the model's graph form does not reproduce its output (a module whose forward differs from its graph form?)");
        }

        public Tensor Propagate(InputSpec spec, LrpOptions options, Tensor outputRelevance, Action<int, Tensor>? observe)
        {
            var propagation = new LrpPropagation(Graph, Rules(Graph, Standalone, options, spec, Input.shape[1]))
            {
                PoolEpsilon = options.Convention == LrpConvention.Captum ? options.Epsilon ?? 1e-9 : 1e-6,
            };
            return propagation.Propagate(Input, Values, outputRelevance, observe);
        }
    }

    const string CheckedKey = "lrp: graph checked: ";

    /// <inheritdoc/>
    public override AttributionResult Attribute(LrpOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var x = input.Input;
        // The graph's node values and the rules' modified forwards (up to five copies of a layer's input) stay alive for
        // a whole propagation: split the batch to what the memory budget holds. Rows are independent, so the maps equal
        // the unsplit ones.
        long n = x.shape[0], per = Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true);
        if (per >= n) return Whole(ctx, options, input);
        var (_, output, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var parts = new List<Tensor>();
        for (long s = 0; s < n; s += per)
        {
            long len = Math.Min(per, n - s);
            var rows = Enumerable.Range((int)s, (int)len).ToArray();
            parts.Add(Attribute(ctx, options, x.narrow(0, s, len), selection.Rows(rows), output.narrow(0, s, len)));
        }
        return new AttributionResult(cat(parts, 0), selection);
    }

    /// <summary>A batch in one propagation: the graph's forward gives both the node values and the output the target is
    /// selected on; the model's own forward runs only on the step's first batch, to check that the graph reproduces it.</summary>
    static AttributionResult Whole(IAnalysisContext ctx, LrpOptions options, AttributionInput input)
    {
        using var scope = NewDisposeScope();
        if (ctx.Target.RequiredLayers.Count > 0) throw new LoupeException($"lrp: explains model outputs; the target reads layers ({string.Join(", ", ctx.Target.RequiredLayers)})");
        var pass = GraphPass.Run(ctx.Model, input.Input);
        if (!ctx.RunCache.ContainsKey(CheckedKey + ctx.StepId))
        {
            using (no_grad()) pass.Check(ctx.Model.Forward(input.Input));
            ctx.RunCache[CheckedKey + ctx.StepId] = true;
        }
        var selection = input.Selection ?? ctx.Target.Select(new TargetInput(pass.Output, l => throw new LoupeException($"lrp: no layer '{l}'")), input.Slot);
        var map = pass.Propagate(ctx.Input, options, OutputRelevance(ctx, options, pass.Output, selection), null);
        return new AttributionResult(scope.MoveToOuter(map), selection);
    }
}
