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

    /// <summary>The layers of the default representation: every layer but the containers.</summary>
    public static string[] AllLayers(IModel model) => [.. model.Layers.Where(l => !Containers.Contains(l.Kind)).Select(l => l.Name)];

    /// <inheritdoc/>
    protected override (Tensor Logits, Tensor? Representation) Forward(StabilityOptions o, IAnalysisContext ctx, Tensor input, TargetSelection selection)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var layers = o.RepresentationLayers();
        long n = input.shape[0];
        if (ctx.Model is IModelInterventions iv && ctx.Model.Capabilities.HasFlag(ModelCapabilities.Interventions))
        {
            // Every call's output of every selected layer, in the order of the calls, as Quantus's forward hooks collect
            // them (a module that runs twice, as resnet's ReLUs, gives two parts); kept out of the module's own dispose scope.
            var outputs = new List<Tensor>();
            var handles = new List<IDisposable>();
            try
            {
                foreach (var l in layers.Length > 0 ? layers : AllLayers(ctx.Model))
                    handles.Add(iv.Intervene(l, t =>
                    {
                        if (t.dim() > 0 && t.shape[0] == n) outputs.Add(t.detach().reshape(n, -1).clone().DetachFromDisposeScope());
                        return t;
                    }));
                var (logits, capture, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, [], forGradients: false, selection);
                capture.Dispose();
                if (outputs.Count == 0)
                    throw new LoupeException($"relative-representation-stability: {(layers.Length > 0 ? $"layer(s) {string.Join(", ", layers)}" : "the model's layers")} gave no output of the batch's {n} rows during the forward pass (a layer the model never calls, or whose output is not one row per input): name layers that 'loupe layers' lists with an N×… output");
                return (scope.MoveToOuter(logits.detach()), scope.MoveToOuter(cat(outputs, 1)));
            }
            finally
            {
                foreach (var h in handles) h.Dispose();
                foreach (var t in outputs) t.Dispose();
            }
        }
        if (layers.Length == 0) layers = AllLayers(ctx.Model);
        var (output, cap, _, _) = Explain.Forward(ctx.Model, ctx.Target, input, layers, forGradients: false, selection);
        using (cap)
        {
            var h = cat(layers.Select(l => cap[l].reshape(n, -1)).ToArray(), 1);
            return (scope.MoveToOuter(output.detach()), scope.MoveToOuter(h));
        }
    }
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
