using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary><c>relative-representation-stability</c>: the denominator is the relative change of the internal
/// representation, ‖(L(x) − L(x'))/L(x)‖: the outputs of <c>layer</c> and <c>layers</c> (Quantus layer_names),
/// flattened and concatenated (the norm does not depend on their order), or by default those of every layer but the
/// containers; every call's output, as Quantus's forward hooks keep them (a module that runs twice, as resnet's ReLUs,
/// contributes both). Lower is better.</summary>
[ReadsOptions(nameof(StabilityOptions.Layer), nameof(StabilityOptions.Layers))]
public sealed class RelativeRepresentationStability : RelativeStability
{
    /// <inheritdoc/>
    public override string Id => "relative-representation-stability";
    /// <inheritdoc/>
    protected override bool UsesRepresentation => true;
    /// <summary>Kinds of layers that only hold others (Quantus skips the model and its Sequentials).</summary>
    static readonly HashSet<string> Containers = ["Sequential", "ModuleList", "ModuleDict"];

    /// <summary>The layers of the default representation, each tensor once: the model's modules but the containers
    /// where it lists modules (a TorchSharp model's; the PyTorch module paths of an exported ONNX graph, each a name of
    /// one node output, so a container and its last child, which name one value, count once), else every node output
    /// (a graph without module paths); never an alias (a node's name beside its output's).</summary>
    public static string[] AllLayers(IModel model)
    {
        bool modules = model.Layers.Any(l => l.IsModule);
        return [.. model.Layers.Where(l => (!modules || l.IsModule) && (modules || l.AliasOf is null) && !Containers.Contains(l.Kind))
            .DistinctBy(l => l.AliasOf ?? l.Name, StringComparer.Ordinal).Select(l => l.Name)];
    }

    /// <summary>Whether a layer's output is part of the representation of a batch of <paramref name="rows"/> inputs: a
    /// floating-point tensor with one row per input (not a shape, an index or a sequence-first tensor).</summary>
    static bool PerInput(Tensor t, long rows) => t.dim() > 0 && t.shape[0] == rows && t.is_floating_point();

    /// <inheritdoc/>
    protected override (Tensor Logits, IReadOnlyList<(string Key, Tensor Part)>? Representation) Forward(StabilityOptions o, IAnalysisContext ctx, Tensor input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var layers = o.RepresentationLayers();
        bool named = layers.Length > 0;
        if (!named) layers = AllLayers(ctx.Model);
        long n = input.shape[0];
        var parts = new List<(string Key, Tensor Part)>();
        if (ctx.Model is IModelInterventions iv && ctx.Model.Capabilities.HasFlag(ModelCapabilities.Interventions))
        {
            // Every call's output of every selected layer, in the order of the calls, as Quantus's forward hooks collect
            // them (a module that runs twice, as resnet's ReLUs, gives two parts, keyed by layer and call); kept out of
            // the module's own dispose scope.
            var handles = new List<IDisposable>();
            Tensor logits;
            try
            {
                foreach (var l in layers)
                {
                    int calls = 0;
                    handles.Add(iv.Intervene(l, t =>
                    {
                        int call = calls++;
                        if (PerInput(t, n)) parts.Add(($"{l}#{call}", t.detach().reshape(n, -1).clone().DetachFromDisposeScope()));
                        return t;
                    }));
                }
                var (forward, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, [], forGradients: false, selection);
                capture.Dispose();
                logits = forward.detach();
            }
            finally
            {
                foreach (var h in handles) h.Dispose();
                foreach (var (_, t) in parts) scope.Attach(t);   // this scope frees them on every path
            }
            if (parts.Count == 0) throw NoOutput(layers, named, n);
            return (scope.MoveToOuter(logits), [.. parts.Select(p => (p.Key, scope.MoveToOuter(p.Part)))]);
        }
        var (output, cap, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, layers, forGradients: false, selection);
        using (cap)
        {
            foreach (var l in layers)
                if (PerInput(cap[l], n)) parts.Add((l, cap[l].reshape(n, -1)));
            if (parts.Count == 0) throw NoOutput(layers, named, n);
            return (scope.MoveToOuter(output.detach()), [.. parts.Select(p => (p.Key, scope.MoveToOuter(p.Part.clone())))]);
        }
    }

    static LoupeException NoOutput(string[] layers, bool named, long n) =>
        new($"relative-representation-stability: {(named ? $"layer(s) {string.Join(", ", layers)}" : "the model's layers")} gave no floating-point output of the batch's {n} rows during the forward pass (a layer the model never calls, or whose output is not one row per input): name layers that 'loupe layers' lists with an N×… output");

    /// <inheritdoc/>
    /// <remarks>The representations are kept as the model gives them (float32: every layer's output of every copy can be
    /// large) and compared in float64, a block of columns at a time (the float64 temporaries stay small).</remarks>
    protected override Tensor Denominator(StabilityOptions o, Tensor x, Tensor xs, Tensor? h, Tensor? hs)
    {
        long rows = h!.shape[0], k = h.shape[1], step = Math.Max(1, (1L << 22) / Math.Max(1, rows));
        var squares = zeros(rows, dtype: ScalarType.Float64);
        for (long c0 = 0; c0 < k; c0 += step)
        {
            using var block = NewDisposeScope();
            long width = Math.Min(step, k - c0);
            var a = h.narrow(1, c0, width).to(ScalarType.Float64);
            var b = hs!.narrow(1, c0, width).to(ScalarType.Float64);
            squares.add_(((a - b) / (a + (a == 0).to(a.dtype) * o.EpsMin)).square().sum(1));
        }
        return squares.sqrt();
    }
}
