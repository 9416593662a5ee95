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
    /// <remarks>The inputs' representation: every part (layer and call) cloned as the model gives it (its type, shape
    /// and memory layout: float32, N×C×H×W channels-last on the torchvision backend).</remarks>
    protected override (Tensor Logits, IReadOnlyList<(string Key, Tensor Part)>? Representation) Forward(StabilityOptions o, IAnalysisContext ctx, Tensor input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        var parts = new List<(string Key, Tensor Part)>();
        Tensor logits;
        try
        {
            logits = WithOutputs(o, ctx, input, selection, (key, t) => parts.Add((key, t.clone().DetachFromDisposeScope())));
        }
        finally
        {
            foreach (var (_, t) in parts) scope.Attach(t);   // kept out of the forward's scopes; this one frees them on every path
        }
        return (scope.MoveToOuter(logits), [.. parts.Select(p => (p.Key, scope.MoveToOuter(p.Part)))]);
    }

    /// <inheritdoc/>
    /// <remarks>The copies' representation is never kept: each part, as the forward gives it, adds its rows' squared
    /// relative changes against the input's part of the same key and shape (the parts both passes gave, as
    /// <see cref="StabilityMetric.Align"/> keeps them), read in one pass as they lie (<see cref="RelativeSquares"/>),
    /// to one float64 sum per copy, which h' carries (k×N×1; h is null). Keeping every layer's output of every copy and
    /// comparing them in float64 tensors took resnet18 at 224×224 1.47× the forward and backward passes the metric
    /// needs (`Loupe.Benchmarks.dll --metric-survey 224 8 2 Samples=8 RelativeRepresentationStability`).</remarks>
    protected override (Tensor Logits, Tensor? H, Tensor? Hs) CopiesForward(StabilityOptions o, IAnalysisContext ctx, Tensor xs, TargetSelection selection, IReadOnlyList<(string Key, Tensor Part)>? clean, long k, long n)
    {
        using var scope = NewDisposeScope();
        var byKey = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, part) in clean ?? []) byKey.TryAdd(key, part);
        var sums = new double[k * n];
        int matched = 0, given = 0;
        var logits = WithOutputs(o, ctx, xs, selection, (key, t) =>
        {
            given++;
            if (!byKey.TryGetValue(key, out var h) || !t.shape.Skip(1).SequenceEqual(h.shape.Skip(1))) return;
            matched++;
            RelativeSquares.Add(h, t, o.EpsMin, sums);
        });
        if (matched == 0)
            throw new LoupeException($"{Id}: no layer of the representation gave one row per input in both the inputs' and the noisy copies' forward passes ({byKey.Count} parts against {given}); name layers with an N×… output ('loupe layers' lists them)");
        return (scope.MoveToOuter(logits), null, scope.MoveToOuter(tensor(sums).view(k, n, 1)));
    }

    /// <summary>One forward without gradients; <paramref name="output"/> sees each output of the representation's
    /// layers that has one row per input, keyed by layer and call (every call's, as Quantus's forward hooks collect
    /// them: a module that runs twice, as resnet's ReLUs, gives two) on a model with interventions, else by layer (its
    /// last call's, from a capture). The tensors are the model's: read them, do not keep them.</summary>
    static Tensor WithOutputs(StabilityOptions o, IAnalysisContext ctx, Tensor input, TargetSelection selection, Action<string, Tensor> output)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var layers = o.RepresentationLayers();
        bool named = layers.Length > 0;
        if (!named) layers = AllLayers(ctx.Model);
        long n = input.shape[0];
        int seen = 0;
        if (ctx.Model is IModelInterventions iv && ctx.Model.Capabilities.HasFlag(ModelCapabilities.Interventions))
        {
            var handles = new List<IDisposable>();
            try
            {
                foreach (var l in layers)
                {
                    int calls = 0;
                    handles.Add(iv.Intervene(l, t =>
                    {
                        int call = calls++;
                        if (PerInput(t, n))
                        {
                            seen++;
                            using var d = t.detach();   // freed at once: a handle left to the forward's scope would keep every output alive
                            output($"{l}#{call}", d);
                        }
                        return t;
                    }));
                }
                var (forward, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, [], forGradients: false, selection);
                capture.Dispose();
                if (seen == 0) throw NoOutput(layers, named, n);
                return scope.MoveToOuter(forward.detach());
            }
            finally
            {
                foreach (var h in handles) h.Dispose();
            }
        }
        var (logits, cap, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, layers, forGradients: false, selection);
        using (cap)
        {
            foreach (var l in layers)
                if (PerInput(cap[l], n)) { seen++; output(l, cap[l]); }
            if (seen == 0) throw NoOutput(layers, named, n);
            return scope.MoveToOuter(logits.detach());
        }
    }

    static LoupeException NoOutput(string[] layers, bool named, long n) =>
        new($"relative-representation-stability: {(named ? $"layer(s) {string.Join(", ", layers)}" : "the model's layers")} gave no floating-point output of the batch's {n} rows during the forward pass (a layer the model never calls, or whose output is not one row per input): name layers that 'loupe layers' lists with an N×… output");

    /// <inheritdoc/>
    /// <remarks>h' holds each copy's sum of squared relative changes (<see cref="CopiesForward"/>).</remarks>
    protected override Tensor Denominator(StabilityOptions o, Tensor x, Tensor xs, Tensor? h, Tensor? hs) => hs!.view(-1).sqrt();
}
