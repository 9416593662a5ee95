using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;


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
        if (options.Convention == LrpConvention.Captum && (options.Composite is not null || options.Rule is not null || options.FirstRule is not null || options.ConvRule is not null || options.DenseRule is not null))
            yield return "lrp: convention: captum assigns Captum's rules (ε everywhere); leave composite, rule, first_rule, conv_rule and dense_rule unset (name layers in rules: instead)";
        if (options.Composite is LrpComposite.Uniform or LrpComposite.ExcitationBackprop || options.Rule is not null)
            foreach (var (set, key) in new[] { (options.ConvRule, "conv_rule"), (options.DenseRule, "dense_rule") })
                if (set is not null) yield return $"lrp: {key} replaces a composite's rule for a layer type; composite {(options.Rule is not null ? "uniform (rule:)" : options.Composite == LrpComposite.Uniform ? "uniform" : "excitation-backprop")} already sets one rule for every layer";
        if (options.High <= options.Low) yield return $"lrp: high ({options.High}) must be above low ({options.Low})";
        foreach (var e in OptionRules.OnlyWith(options, Assigns(options, LrpRuleKind.ZBox), "the z-box rule (composite epsilon-gamma-box, rule:, first_rule: or rules:)", nameof(options.Low), nameof(options.High), nameof(options.LowFile), nameof(options.HighFile)))
            yield return "lrp: " + e;
        foreach (var (file, scalar, key) in new[] { (options.LowFile, nameof(options.Low), "low"), (options.HighFile, nameof(options.High), "high") })
            if (file is not null && OptionRules.IsSet(options, scalar)) yield return $"lrp: give either '{key}' (pixel space) or '{key}_file' (per element, normalised space), not both";
        bool gamma = options.Rules?.Any(r => r.Rule == LrpRuleKind.Gamma && r.Gamma is null) == true
            || options.Convention != LrpConvention.Captum && (options.Composite == LrpComposite.EpsilonGammaBox && options.ConvRule is null || Types(options).Contains(LrpRuleKind.Gamma));
        foreach (var e in OptionRules.OnlyWith(options, gamma, "the gamma rule (composite epsilon-gamma-box, rule:, first_rule:, conv_rule:, dense_rule:, or rules: without their own gamma)", nameof(options.Gamma)))
            yield return "lrp: " + e;
        if (options.Alpha is not null && !Types(options).Contains(LrpRuleKind.AlphaBeta) && options.Rules?.Any(r => r.Rule == LrpRuleKind.AlphaBeta && r.Alpha is null) != true)
            yield return "lrp: alpha applies to rule alpha-beta (rule:, first_rule:, conv_rule:, dense_rule: or rules:)";
        if (Types(options).Contains(LrpRuleKind.Pass))
            yield return "lrp: pass keeps a layer's relevance as it is: name the layer (a batch norm) in rules:, not in rule:, first_rule:, conv_rule: or dense_rule:";
        foreach (var e in LrpLayers.RuleErrors(options)) yield return e;
        string? error = null;
        ModelGraph? graph = null;
        if (context.Model is IModelGraphSource source)
        {
            try { graph = source.Graph(); }
            catch (LoupeException e) { error = $"lrp: the model has no graph form: {e.Message}"; }
            if (graph is not null && NoRule(graph, options) is { } refused) { error = refused; graph = null; }
        }
        if (error is not null) yield return error;
        if (options.AttributeToLayerInput && options.Layer is null) yield return "lrp: attribute_to_layer_input applies with layer:";
        if (graph is not null && (options.Rules is { Length: > 0 } || options.Layer is not null))
            foreach (var e in NamedLayerErrors(graph, options)) yield return e;
    }

    /// <summary>The rules given by type or position: rule:, first_rule:, conv_rule:, dense_rule:.</summary>
    static LrpRuleKind[] Types(LrpOptions o) => [.. new[] { o.Rule, o.FirstRule, o.ConvRule, o.DenseRule }.OfType<LrpRuleKind>()];

    /// <summary>Whether some layer gets rule <paramref name="kind"/>: by rules:, or (Zennit's convention) by rule:,
    /// first_rule:, conv_rule:, dense_rule: or epsilon-gamma-box's first layer (z-box) when first_rule does not replace it.</summary>
    static bool Assigns(LrpOptions o, LrpRuleKind kind) =>
        o.Rules?.Any(r => r.Rule == kind) == true
        || o.Convention != LrpConvention.Captum && (Types(o).Contains(kind)
            || kind == LrpRuleKind.ZBox && o.FirstRule is null && o.Composite == LrpComposite.EpsilonGammaBox);

    /// <summary>The first node of the graph form no LRP rule here covers, named, or null. Under Zennit's conventions
    /// (its composites' behaviour) SiLU, hard-swish, hard-sigmoid and GELU are activations (Zennit's Activation types:
    /// relevance passes, or ExcitationBackprop differentiates them) and a product of two values — squeeze-and-excitation's
    /// x · scale, a functional product in PyTorch that no composite hooks — takes its gradient, as autograd gives it to
    /// Zennit's relevance; Captum's LRP refuses modules outside its rule list (SiLU, …) and propagates gradients rather
    /// than relevance through unhooked products, so under convention: captum they are refused. Layer norms and permutes
    /// (ConvNeXt) likewise: no Zennit composite maps LayerNorm or a permute, so autograd's gradient carries the relevance
    /// through them (and ConvNeXt's dense layers take the dense rule on channels-last values); Captum refuses LayerNorm.
    /// The graph form has them all for the methods that only differentiate it (full-grad).</summary>
    static string? NoRule(ModelGraph graph, LrpOptions options) =>
        graph.Nodes.FirstOrDefault(n => !Ruled(n.Op, options.Convention)) is { } n
            ? $"lrp: node '{n.Name}' ({n.Op}{(n.Op == GraphOp.Mul ? ": a product of two values, as squeeze-and-excitation's" : "")}) has no LRP rule here under convention: {options.Convention.ToString().ToLowerInvariant()}{(Ruled(n.Op, LrpConvention.Zennit) ? " (convention: zennit takes it, as Zennit's composites do)" : "")}; operators with one: {string.Join(", ", Enum.GetValues<GraphOp>().Where(op => Ruled(op, options.Convention)))}"
            : null;

    static bool Ruled(GraphOp op, LrpConvention convention) =>
        op is GraphOp.Conv or GraphOp.Linear or GraphOp.BatchNorm or GraphOp.Relu or GraphOp.MaxPool or GraphOp.AvgPool or GraphOp.AdaptiveAvgPool
            or GraphOp.Flatten or GraphOp.Reshape or GraphOp.Add or GraphOp.Concat or GraphOp.Identity or GraphOp.Pad or GraphOp.Clip or GraphOp.Sigmoid
            or GraphOp.Narrow or GraphOp.ChannelShuffle
        || convention != LrpConvention.Captum && op is GraphOp.Silu or GraphOp.Hardswish or GraphOp.Hardsigmoid or GraphOp.Gelu or GraphOp.Mul
            or GraphOp.LayerNorm or GraphOp.Permute;

    /// <summary>The named layers' errors on the canonized graph (a list, so that the dispose scope of the canonized
    /// graph's tensors closes before the validator's enumeration goes on).</summary>
    static List<string> NamedLayerErrors(ModelGraph graph, LrpOptions options)
    {
        using var scope = NewDisposeScope();
        var canonized = Canonize(graph, options, out var standalone);
        var errors = new List<string>();
        foreach (var r in options.Rules ?? [])
            if (LrpLayers.Find(canonized, standalone, r, options.Convention) is { Error: { } e }) errors.Add(e);
        if (options.Layer is { } layer && LrpLayers.Kept(canonized, layer, options.AttributeToLayerInput) is { Error: { } kept }) errors.Add(kept);
        return errors;
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
        double stabilizer = options.Stabilizer ?? (options.Convention == LrpConvention.Captum ? 1e-9 : 1e-6);
        var low = options.LowFile is { } lf ? Bound(lf, spec, channels) : (mean.neg() + options.Low) / std;
        var high = options.HighFile is { } hf ? Bound(hf, spec, channels) : (mean.neg() + options.High) / std;
        LrpRule Make(LrpRuleKind kind) => new(kind, eps, options.Gamma, kind == LrpRuleKind.ZBox ? low : null, kind == LrpRuleKind.ZBox ? high : null)
        { Alpha = options.Alpha ?? 2, Stabilizer = stabilizer };
        var named = new Dictionary<int, LrpRule>();
        foreach (var r in options.Rules ?? [])
        {
            var (index, error) = LrpLayers.Find(graph, standalone, r, options.Convention);
            if (error is not null) throw new LoupeException(error);
            named[index] = Make(r.Rule) with
            {
                Epsilon = r.Epsilon ?? eps,
                Gamma = r.Gamma ?? options.Gamma,
                Alpha = r.Alpha ?? options.Alpha ?? 2,
                Beta = r.Beta ?? 1,
                Stabilizer = r.Stabilizer ?? stabilizer,
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
            LrpComposite.ExcitationBackprop => LrpRuleKind.ZPlus,
            _ => options.Rule,
        };
        LrpRuleKind? dense = composite switch
        {
            LrpComposite.Uniform => options.Rule,
            LrpComposite.ExcitationBackprop => LrpRuleKind.ZPlus,
            _ => LrpRuleKind.Epsilon,
        };
        conv = options.ConvRule ?? conv;
        dense = options.DenseRule ?? dense;
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
            if (named.TryGetValue(i, out var own)) return own;
            if (!n.IsLinearLayer) return null;
            // A batch norm no canonizer merged (pre-activation blocks, after a concatenation): Zennit's composites map
            // BatchNorm to Pass (until 2026-12-05 Loupe gave it LRP-ε, whose shift absorbed relevance).
            if (standalone.Contains(i))
                return new LrpRule(LrpRuleKind.Epsilon, eps) { Pass = composite != LrpComposite.ExcitationBackprop, Gradient = composite == LrpComposite.ExcitationBackprop };
            var rule = i == firstIndex && firstKind is { } f ? Make(f) : Make((n.Op == GraphOp.Conv ? conv : dense) ?? LrpRuleKind.Epsilon);
            return options.ZeroBias ? rule with { ZeroBias = true } : rule;
        };
    }

    /// <summary>A z-box bound from a .npy (C×H×W, 1×C×H×W, or C×1×1 per channel; normalised input space) as
    /// 1×C×H×W, checked against the model's input.</summary>
    static Tensor Bound(string file, InputSpec spec, long channels)
    {
        var t = Npy.Read(file).ToTensor().to(ScalarType.Float32);
        if (t.dim() == 3) t = t.unsqueeze(0);
        if (t.dim() != 4 || t.shape[0] != 1 || t.shape[1] != channels
            || !(t.shape[2] == spec.Height && t.shape[3] == spec.Width || t.shape[2] == 1 && t.shape[3] == 1))
            throw new LoupeException($"{file}: a z-box bound must be {channels}×{spec.Height}×{spec.Width} (or {channels}×1×1) in normalised input space; it is {string.Join("×", t.shape)}");
        if (!t.isfinite().all().item<bool>()) throw new LoupeException($"{file}: a z-box bound holds NaN or infinite values");
        return t;
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
        var relevance = CheckedOps.Grad([scores.sum()], [o])[0];
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
            var whole = source.Graph();
            if (NoRule(whole, options) is { } refused) throw new LoupeException(refused);
            var graph = Canonize(whole, options, out var standalone);
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

        public Tensor Propagate(InputSpec spec, LrpOptions options, Tensor outputRelevance, Action<int, Tensor>? observe, Action<int, Tensor[]>? observeInputs = null)
        {
            var propagation = new LrpPropagation(Graph, Rules(Graph, Standalone, options, spec, Input.shape[1]))
            {
                PoolEpsilon = options.Convention == LrpConvention.Captum ? options.Epsilon ?? 1e-9 : 1e-6,
                DifferentiateActivations = options.Composite == LrpComposite.ExcitationBackprop,
            };
            return propagation.Propagate(Input, Values, outputRelevance, observe, observeInputs);
        }

        /// <summary>The input's relevance, and with <c>layer:</c> the relevance kept there (Captum's LayerLRP; tensors in
        /// the caller's scope).</summary>
        public (Tensor Map, Tensor? Layer) Propagate(IAnalysisContext ctx, LrpOptions options, TargetSelection selection)
        {
            var relevance = OutputRelevance(ctx, options, Output, selection);
            if (options.Layer is not { } name) return (Propagate(ctx.Input, options, relevance, null), null);
            var (node, error) = LrpLayers.Kept(Graph, name, options.AttributeToLayerInput);
            if (error is not null) throw new LoupeException(error);
            Tensor? kept = null;
            var map = options.AttributeToLayerInput
                ? Propagate(ctx.Input, options, relevance, null, (i, parts) => { if (i == node) kept = parts[0]; })
                : Propagate(ctx.Input, options, relevance, (i, r) => { if (i == node) kept = r; });
            // A node the relevance never reaches (outside the target's path) holds none.
            int from = Graph.Nodes[node].Inputs[0];
            var shape = options.AttributeToLayerInput ? (from < 0 ? Input : Values[from]) : Values[node];
            return (map, (kept ?? zeros_like(shape)).contiguous());
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
        var parts = new List<(Tensor Map, Tensor? Layer)>();
        for (long s = 0; s < n; s += per)
        {
            long len = Math.Min(per, n - s);
            var rows = Enumerable.Range((int)s, (int)len).ToArray();
            using var scope = NewDisposeScope();
            var pass = GraphPass.Run(ctx.Model, x.narrow(0, s, len), options);
            pass.Check(output.narrow(0, s, len));
            var (map, layer) = pass.Propagate(ctx, options, selection.Rows(rows));
            parts.Add((scope.MoveToOuter(map), layer is null ? null : scope.MoveToOuter(layer)));
        }
        return Result(options, x, cat(parts.Select(p => p.Map).ToList(), 0), options.Layer is null ? null : cat(parts.Select(p => p.Layer!).ToList(), 0), selection);
    }

    /// <summary>The step's result: the input's relevance, or (<c>layer:</c>) the layer's relevance as the raw result and
    /// its channel sum resized to the input as the map (as the other layer attributions).</summary>
    static AttributionResult Result(LrpOptions options, Tensor x, Tensor map, Tensor? layer, TargetSelection selection)
    {
        // A stabiliser far below a layer's pre-activations (ε = 1e-9 on squeeze-and-excitation's small branches, in
        // float32) can overflow the relevance: a clear error, not maps of NaN.
        if (!(layer ?? map).isfinite().all().item<bool>())
            throw new LoupeException($"lrp: the relevance overflowed (infinite or NaN values): a stabiliser (epsilon {options.Epsilon?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "default"}, stabilizer) far below some layer's outputs in float32 — raise epsilon or stabilizer, or leave zero_bias off");
        if (layer is null) return new AttributionResult(map, selection);
        if (layer.dim() != 4)
            throw new LoupeException($"lrp: layer '{options.Layer}' gives {layer.dim()}-D relevance ({string.Join("×", layer.shape)}); a map needs an N×K×h×w layer (a convolution, pool or activation before the flatten)");
        long h = x.shape[2], w = x.shape[3];
        Tensor MapOf(Tensor raw) => Display.Resize(raw.sum(1, keepdim: false), h, w);
        return new AttributionResult(MapOf(layer), selection, layer) { MapOfRaw = MapOf };
    }

    /// <inheritdoc/>
    protected override string RawName => ArtifactName + "-layer";

    /// <summary>A batch in one propagation: the graph's forward gives both the node values and the output the target is
    /// selected on; the model's own forward runs only on the step's first batch, to check that the graph reproduces it.</summary>
    static AttributionResult Whole(IAnalysisContext ctx, LrpOptions options, AttributionInput input)
    {
        Tensor map;
        Tensor? layer;
        TargetSelection selection;
        using (var scope = NewDisposeScope())
        {
            if (ctx.Target.RequiredLayers.Count > 0) throw new LoupeException($"lrp: explains model outputs; the target reads layers ({string.Join(", ", ctx.Target.RequiredLayers)})");
            var pass = GraphPass.Run(ctx.Model, input.Input, options);
            if (!ctx.RunCache.ContainsKey(CheckedKey + ctx.StepId))
            {
                using (no_grad()) pass.Check(ctx.Model.Forward(input.Input));
                ctx.RunCache[CheckedKey + ctx.StepId] = true;
            }
            selection = input.Selection ?? ctx.Target.Select(new TargetInput(pass.Output, l => throw new LoupeException($"lrp: no layer '{l}'")), input.Slot);
            var (m, l) = pass.Propagate(ctx, options, selection);
            map = scope.MoveToOuter(m);
            layer = l is null ? null : scope.MoveToOuter(l);
        }
        return Result(options, input.Input, map, layer, selection);
    }
}
