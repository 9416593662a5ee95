using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary><c>lrp</c>'s named layers: the per-layer rules (<c>rules:</c>) and the layer whose relevance is kept
/// (<c>layer:</c>), found in the model's canonized graph by module path or node name.</summary>
public static class LrpLayers
{
    /// <summary>The per-layer rules' errors that need no model: rules and parameters the convention lacks.</summary>
    public static IEnumerable<string> RuleErrors(LrpOptions options)
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
            if (r.Alpha is not null && r.Rule != LrpRuleKind.AlphaBeta) yield return $"{at}: alpha applies to the alpha-beta rule";
            if (r.Beta is not null && r.Rule != LrpRuleKind.TakesMost) yield return $"{at}: beta applies to the takes-most rule";
            if (r.Rule == LrpRuleKind.TakesMost && (r.Stabilizer is not null || r.ZeroBias)) yield return $"{at}: takes-most takes only beta";
            if (r.ZeroBias && (r.Rule == LrpRuleKind.Pass || captum && r.Rule == LrpRuleKind.Epsilon))
                yield return $"{at}: zero_bias does not apply to {Kebab(r.Rule)}{(captum ? " under convention: captum (its set_bias_to_zero belongs to gamma and alpha1-beta0)" : "")}";
        }
        foreach (var g in options.Rules.GroupBy(r => r.Layer).Where(g => g.Count() > 1))
            yield return $"lrp: rules: layer '{g.Key}' is named {g.Count()} times";
        if (captum && options.ZeroBias) yield return "lrp: zero_bias is Zennit's composite option; under convention: captum give set_bias_to_zero per layer (rules: zero_bias)";
    }

    public static string Kebab(LrpRuleKind k) => k switch
    {
        LrpRuleKind.Alpha1Beta0 => "alpha1-beta0", LrpRuleKind.Alpha2Beta1 => "alpha2-beta1", LrpRuleKind.ZPlus => "z-plus",
        LrpRuleKind.ZBox => "z-box", LrpRuleKind.WSquare => "w-square", LrpRuleKind.AlphaBeta => "alpha-beta", LrpRuleKind.TakesMost => "takes-most",
        _ => k.ToString().ToLowerInvariant(),
    };

    /// <summary>Whether a graph node answers to a layer name: its own name, or (ONNX exports) the module it belongs to.</summary>
    public static bool Names(GraphNode node, string layer) => node.Name == layer || ModuleScopes.Innermost(node.Name) == layer;

    /// <summary>The node a per-layer rule names in the canonized graph, or why none can take it.</summary>
    public static (int Index, string? Error) Find(ModelGraph graph, HashSet<int> standalone, LrpLayerRule rule, LrpConvention convention)
    {
        var nodes = graph.Nodes;
        var matches = Enumerable.Range(0, nodes.Count).Where(i => Names(nodes[i], rule.Layer)).ToList();
        var at = $"lrp: rules: layer '{rule.Layer}'";
        // A module path names every node inside the module; a layer takes the rule when exactly one of them can.
        var maxPools = matches.Where(i => nodes[i].Op == GraphOp.MaxPool).ToList();
        if (rule.Rule == LrpRuleKind.TakesMost)
        {
            if (maxPools.Count != 1)
                return (-1, maxPools.Count > 1 ? $"{at} names {maxPools.Count} max pools: name one" : $"{at}: takes-most applies to a max pool, and this layer holds none");
            if (nodes[maxPools[0]].CeilMode)
                return (-1, $"{at}: takes-most recomputes the pool's windows in floor mode, as Zennit's does; this pool rounds its output size up (ceil_mode)");
            return (maxPools[0], null);
        }
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
        // Captum's layer.rule on a pool: EpsilonRule(ε) (its default for MaxPool, AvgPool and AdaptiveAvgPool).
        var pools = matches.Where(i => nodes[i].Op is GraphOp.MaxPool or GraphOp.AvgPool or GraphOp.AdaptiveAvgPool).ToList();
        if (convention == LrpConvention.Captum && pools.Count == 1)
            return rule.Rule == LrpRuleKind.Epsilon && !rule.ZeroBias && rule.Stabilizer is null
                ? (pools[0], null)
                : (-1, $"{at} is a {nodes[pools[0]].Op.ToString().ToLowerInvariant()}: a pool takes rule: epsilon (Captum's EpsilonRule, with its own epsilon)");
        if (matches.Count > 0)
        {
            var op = nodes[matches[^1]].Op;
            return (-1, op == GraphOp.Identity && convention == LrpConvention.Zennit
                ? $"{at} is a batch norm merged into the layer before it (Zennit's canonizer): give that layer the rule"
                : $"{at} is a {op.ToString().ToLowerInvariant()} node: rules apply to convolutions and dense layers{(convention == LrpConvention.Captum ? ", batch norms and pools" : " (a max pool takes rule: takes-most)")}");
        }
        var names = nodes.Where(n => n.IsLinearLayer).Select(n => ModuleScopes.Innermost(n.Name) ?? n.Name).Distinct().ToList();
        return (-1, $"{at}: no such layer in the model's graph{Suggest.DidYouMean(rule.Layer, names)}; layers with weights: {string.Join(", ", names.Take(12))}{(names.Count > 12 ? ", …" : "")}");
    }

    /// <summary>The node whose relevance <c>layer:</c> keeps: the node of that name, or the last node run inside the module
    /// of that path (the module's output); with <paramref name="input"/>, a module of one node with one input.</summary>
    public static (int Index, string? Error) Kept(ModelGraph graph, string layer, bool input)
    {
        var nodes = graph.Nodes;
        bool Inside(GraphNode n) => n.Name == layer || n.Name.StartsWith(layer + ".", StringComparison.Ordinal) || ModuleScopes.Of(n.Name).Contains(layer);
        var inside = Enumerable.Range(0, nodes.Count).Where(i => Inside(nodes[i])).ToList();
        if (inside.Count == 0)
        {
            var names = nodes.Select(n => ModuleScopes.Innermost(n.Name) ?? n.Name).Distinct().ToList();
            return (-1, $"lrp: layer '{layer}': no such layer in the model's graph{Suggest.DidYouMean(layer, names)}; layers: {string.Join(", ", names.Take(12))}{(names.Count > 12 ? ", …" : "")}");
        }
        // A batch norm merged into the layer before it is an identity now: its output is that layer's output.
        var real = inside.Where(i => nodes[i].Op != GraphOp.Identity || inside.Count == 1).ToList();
        if (!input) return (inside[^1], null);
        if (real.Count != 1 || nodes[real[0]].Inputs.Length != 1)
            return (-1, $"lrp: layer '{layer}': attribute_to_layer_input needs a layer of one operator with one input; '{layer}' holds {real.Count} ({string.Join(", ", real.Take(4).Select(i => nodes[i].Op.ToString().ToLowerInvariant()))})");
        return (real[0], null);
    }
}
