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
    /// <summary>Rules per layer.</summary>
    [Description("rules for named layers, before the composite's (Zennit's NameMapComposite in a MixedComposite; Captum's layer.rule): a list of { layer: NAME, rule: RULE } with optional epsilon, gamma, stabilizer, zero_bias; NAME a convolution or dense layer (module path, e.g. features.0, or graph node name), or a batch norm under convention: captum. Rules: zennit: epsilon, gamma, alpha1-beta0, alpha2-beta1, z-plus, z-box, flat, w-square, pass; captum: epsilon, gamma, alpha1-beta0 (Captum's forms) and pass (IdentityRule)")]
    public LrpLayerRule[]? Rules { get; init; }
    /// <summary>Zennit's composite zero_params: ['bias'].</summary>
    [Description("every rule takes the layers' biases as zero (Zennit's composite zero_params=['bias']); per layer: rules' zero_bias")]
    public bool ZeroBias { get; init; }
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

/// <summary>The rule of one named layer (<c>lrp</c>'s <c>rules:</c>).</summary>
public sealed record LrpLayerRule
{
    /// <summary>The layer.</summary>
    [Description("a convolution or dense layer (its module path, e.g. features.0, or its graph node name); under convention: captum also a batch norm")]
    public string Layer { get; init; } = "";
    /// <summary>The rule.</summary>
    [Description("epsilon, gamma, alpha1-beta0, alpha2-beta1, z-plus, z-box, flat, w-square or pass (zennit); epsilon, gamma, alpha1-beta0 or pass (captum)")]
    public LrpRuleKind Rule { get; init; } = LrpRuleKind.Epsilon;
    /// <summary>ε of the epsilon rule.</summary>
    [Range(0, 1e6), Description("ε of the epsilon rule (default: lrp's epsilon)")]
    public double? Epsilon { get; init; }
    /// <summary>γ of the gamma rule.</summary>
    [Range(0, 1e6), Description("γ of the gamma rule (default: lrp's gamma)")]
    public double? Gamma { get; init; }
    /// <summary>Stabiliser of the other rules.</summary>
    [Range(0, 1e6), Description("the stabiliser of a rule other than epsilon (Zennit's stabilizer, default 1e-6; Captum's 1e-9)")]
    public double? Stabilizer { get; init; }
    /// <summary>Bias taken as zero.</summary>
    [Description("the layer's bias taken as zero (Zennit's zero_params=['bias'], Captum's set_bias_to_zero)")]
    public bool ZeroBias { get; init; }
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
        if (options.Rule == LrpRuleKind.Pass || options.FirstRule == LrpRuleKind.Pass)
            yield return "lrp: pass keeps a layer's relevance as it is: name the layer (a batch norm) in rules:, not in rule: or first_rule:";
        foreach (var e in RuleErrors(options)) yield return e;
        string? error = null;
        ModelGraph? graph = null;
        if (context.Model is IModelGraphSource source)
        {
            try { graph = source.Graph(); }
            catch (LoupeException e) { error = $"lrp: the model has no graph form: {e.Message}"; }
        }
        if (error is not null) yield return error;
        if (graph is not null && options.Rules is { Length: > 0 })
        {
            using var scope = NewDisposeScope();
            var canonized = Canonize(graph, options, out var standalone);
            foreach (var r in options.Rules)
                if (Find(canonized, standalone, r, options.Convention) is { Error: { } e }) yield return e;
        }
    }

    /// <summary>The per-layer rules' errors that need no model: rules and parameters the convention lacks.</summary>
    static IEnumerable<string> RuleErrors(LrpOptions options)
    {
        if (options.Rules is null) yield break;
        bool captum = options.Convention == LrpConvention.Captum;
        foreach (var r in options.Rules)
        {
            var at = $"lrp: rules: layer '{r.Layer}'";
            if (string.IsNullOrWhiteSpace(r.Layer)) yield return "lrp: rules: every entry needs a layer";
            if (captum && r.Rule is not (LrpRuleKind.Epsilon or LrpRuleKind.Gamma or LrpRuleKind.Alpha1Beta0 or LrpRuleKind.Pass))
                yield return $"{at}: Captum has no rule {Kebab(r.Rule)} (its rules: epsilon, gamma, alpha1-beta0, pass); use convention: zennit";
            if (r.Epsilon is not null && r.Rule != LrpRuleKind.Epsilon) yield return $"{at}: epsilon applies to the epsilon rule (the other rules' is stabilizer)";
            if (r.Stabilizer is not null && r.Rule is LrpRuleKind.Epsilon or LrpRuleKind.Pass) yield return $"{at}: stabilizer applies to rules other than epsilon and pass (epsilon's is epsilon)";
            if (r.Gamma is not null && r.Rule != LrpRuleKind.Gamma) yield return $"{at}: gamma applies to the gamma rule";
            if (r.ZeroBias && (r.Rule == LrpRuleKind.Pass || captum && r.Rule == LrpRuleKind.Epsilon))
                yield return $"{at}: zero_bias does not apply to {Kebab(r.Rule)}{(captum ? " under convention: captum (its set_bias_to_zero belongs to gamma and alpha1-beta0)" : "")}";
        }
        foreach (var g in options.Rules.GroupBy(r => r.Layer).Where(g => g.Count() > 1))
            yield return $"lrp: rules: layer '{g.Key}' is named {g.Count()} times";
        if (captum && options.ZeroBias) yield return "lrp: zero_bias is Zennit's composite option; under convention: captum give set_bias_to_zero per layer (rules: zero_bias)";
    }

    static string Kebab(LrpRuleKind k) => k switch
    {
        LrpRuleKind.Alpha1Beta0 => "alpha1-beta0", LrpRuleKind.Alpha2Beta1 => "alpha2-beta1", LrpRuleKind.ZPlus => "z-plus",
        LrpRuleKind.ZBox => "z-box", LrpRuleKind.WSquare => "w-square", _ => k.ToString().ToLowerInvariant(),
    };

    /// <summary>Whether a graph node answers to a layer name: its own name, or (ONNX exports) the module it belongs to.</summary>
    static bool Names(GraphNode node, string layer) => node.Name == layer || ModuleScopes.Innermost(node.Name) == layer;

    /// <summary>The node a per-layer rule names in the canonized graph, or why none can take it.</summary>
    static (int Index, string? Error) Find(ModelGraph graph, HashSet<int> standalone, LrpLayerRule rule, LrpConvention convention)
    {
        var nodes = graph.Nodes;
        var matches = Enumerable.Range(0, nodes.Count).Where(i => Names(nodes[i], rule.Layer)).ToList();
        var at = $"lrp: rules: layer '{rule.Layer}'";
        // A module path names every node inside the module; a layer takes the rule when exactly one of them can.
        var able = matches.Where(i => nodes[i].IsLinearLayer).ToList();
        if (able.Count == 1)
        {
            int i = able[0];
            if (rule.Rule == LrpRuleKind.Pass && !standalone.Contains(i))
                return (-1, $"{at}: pass keeps the relevance's shape: it applies to a batch norm, not to a {nodes[i].Op.ToString().ToLowerInvariant()} layer");
            if (rule.Rule != LrpRuleKind.Pass && standalone.Contains(i) && convention == LrpConvention.Zennit)
                return (-1, $"{at}: a batch norm no canonizer merges takes Zennit's Pass; give it rule: pass or leave it out");
            return (i, null);
        }
        if (able.Count > 1) return (-1, $"{at} names {able.Count} layers with weights ({string.Join(", ", able.Select(i => nodes[i].Name))}): name one");
        if (matches.Count > 0)
        {
            var op = nodes[matches[^1]].Op;
            return (-1, op == GraphOp.Identity && convention == LrpConvention.Zennit
                ? $"{at} is a batch norm merged into the layer before it (Zennit's canonizer): give that layer the rule"
                : $"{at} is a {op.ToString().ToLowerInvariant()} node: rules apply to convolutions and dense layers{(convention == LrpConvention.Captum ? " and batch norms" : "")}");
        }
        var names = nodes.Where(n => n.IsLinearLayer).Select(n => ModuleScopes.Innermost(n.Name) ?? n.Name).Distinct().ToList();
        return (-1, $"{at}: no such layer in the model's graph{Suggest.DidYouMean(rule.Layer, names)}; layers with weights: {string.Join(", ", names.Take(12))}{(names.Count > 12 ? ", …" : "")}");
    }

    /// <summary>Canonizes a graph: each batch norm fed only by a convolution/dense layer is merged into it (the batch
    /// norm becomes an identity); any other batch norm becomes a depthwise 1×1 convolution, returned in
    /// <paramref name="standalone"/> (Zennit convention: Pass, as its composites map BatchNorm; captum convention: LRP-ε,
    /// as Captum's EpsilonRule on BatchNorm2d). Tensors made here belong to the caller's dispose scope.</summary>
    public static ModelGraph Canonize(ModelGraph graph, out HashSet<int> standalone) => graph.FoldBatchNorms(out standalone);

    /// <summary><see cref="Canonize(ModelGraph, out HashSet{int})"/> under <paramref name="options"/>: under
    /// convention: captum every batch norm after a convolution stays a layer of its own (Captum's rules see the
    /// convolution and the batch norm as two layers, each with its own rule and ε; merged, a rule other than ε, or
    /// ε's stabiliser, would act on the product).</summary>
    public static ModelGraph Canonize(ModelGraph graph, LrpOptions options, out HashSet<int> standalone)
    {
        if (options.Convention != LrpConvention.Captum) return graph.FoldBatchNorms(out standalone);
        var nodes = graph.Nodes;
        return graph.FoldBatchNorms(out standalone, keepSeparate: i => nodes[i].Inputs[0] is var p && p >= 0 && nodes[p].Op == GraphOp.Conv);
    }

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
        var named = new Dictionary<int, LrpRule>();
        foreach (var r in options.Rules ?? [])
        {
            var (index, error) = Find(graph, standalone, r, options.Convention);
            if (error is not null) throw new LoupeException(error);
            named[index] = Make(r.Rule) with
            {
                Epsilon = r.Epsilon ?? eps,
                Gamma = r.Gamma ?? options.Gamma,
                Stabilizer = r.Stabilizer ?? (options.Convention == LrpConvention.Captum ? 1e-9 : 1e-6),
                ZeroBias = r.ZeroBias,
                Captum = options.Convention == LrpConvention.Captum,
            };
        }
        if (options.Convention == LrpConvention.Captum)
            return i => named.GetValueOrDefault(i) ?? (nodes[i].IsLinearLayer ? Make(LrpRuleKind.Epsilon) : null);
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
            if (named.TryGetValue(i, out var own)) return own;
            // A batch norm no canonizer merged (pre-activation blocks, after a concatenation): Zennit's composites map
            // BatchNorm to Pass (until 2026-12-05 Loupe gave it LRP-ε, whose shift absorbed relevance).
            if (standalone.Contains(i)) return new LrpRule(LrpRuleKind.Epsilon, eps) { Pass = true };
            var rule = i == firstIndex && firstKind is { } f ? Make(f) : Make((n.Op == GraphOp.Conv ? conv : dense) ?? LrpRuleKind.Epsilon);
            return options.ZeroBias ? rule with { ZeroBias = true } : rule;
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
        var pass = GraphPass.Run(model, x, options);
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

        public static GraphPass Run(IModel model, Tensor x, LrpOptions options)
        {
            if (model is not IModelGraphSource source) throw new LoupeException("lrp: the model has no graph form (capability graph)");
            var graph = Canonize(source.Graph(), options, out var standalone);
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
        var pass = GraphPass.Run(ctx.Model, input.Input, options);
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
