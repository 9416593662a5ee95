using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>How the parameter-randomisation metrics overwrite a module's parameters.</summary>
public enum ParameterRandomisation
{
    /// <summary>N(0, σ²) values, σ the original parameter's std, seeded from the step seed and the module (Adebayo et
    /// al.'s re-initialisation from a normal distribution); BatchNorm statistics are kept.</summary>
    Normal,
    /// <summary>PyTorch's <c>reset_parameters()</c> of the module, each after <c>torch.manual_seed(reset_seed + 1)</c>,
    /// as Quantus's randomisation metrics do: ≥2-D weights (convolutions, linear layers) U(±1/√fan_in) (kaiming_uniform
    /// with a = √5), their biases U(±1/√fan_in), 1-D weights (norm layers) 1, their biases 0, BatchNorm statistics
    /// reset (mean 0, variance 1). Modules without a weight (class tokens, position embeddings, attention's in_proj) are
    /// left as they are, as PyTorch modules without <c>reset_parameters</c> are by Quantus.</summary>
    Reset,
}

/// <summary>Options of the metrics that randomise the model's parameters.</summary>
public abstract record RandomisationOptions : MetricOptions
{
    /// <summary>How modules are randomised; null: the metric's default.</summary>
    [Description("how a module's parameters are randomised: reset (PyTorch's reset_parameters after torch.manual_seed(reset_seed + 1) per module, as Quantus: U(±1/√fan_in) weights and biases, norm layers 1 and 0, BatchNorm statistics reset; modules without a weight left out) or normal (N(0, σ²), σ the original's std, seeded from the step seed; BatchNorm statistics kept); default: reset for mprt (Quantus), normal for sanity-randomisation (Adebayo et al.)")]
    public ParameterRandomisation? Randomise { get; init; }
    /// <summary>Quantus's seed.</summary>
    [Range(0, int.MaxValue - 1), Description("randomise: reset — Quantus's seed: every module is re-initialised from a generator seeded reset_seed + 1 (Quantus: torch.manual_seed(seed + 1), seed 42 by default), so the same module shapes get the same values as in Quantus and PyTorch")]
    public int ResetSeed { get; init; } = 42;
    /// <summary>The metric's randomisation when <see cref="Randomise"/> is not set.</summary>
    protected abstract ParameterRandomisation DefaultRandomisation { get; }
    /// <summary>The randomisation in effect.</summary>
    internal ParameterRandomisation Kind => Randomise ?? DefaultRandomisation;

    /// <summary><c>reset_seed</c> set while the modules are not reset (it seeds reset_parameters only).</summary>
    internal IEnumerable<string> RandomisationErrors() =>
        OptionRules.OnlyWith(this, Kind == ParameterRandomisation.Reset, "randomise: reset", nameof(ResetSeed));
}

/// <summary>The modules of a model that the parameter-randomisation metrics randomise, and how (shared by
/// <c>sanity-randomisation</c> and <c>mprt</c>).</summary>
public static class ModelRandomisation
{
    static readonly string[] Statistics = ["running_mean", "running_var", "num_batches_tracked"];

    /// <summary>Modules, top first: (module, its parameter names), grouped by the name before the last '.'. Only
    /// floating-point weights are listed: BatchNorm statistics (<c>running_mean</c>, <c>running_var</c>,
    /// <c>num_batches_tracked</c>), which <see cref="IModel.ParameterNames"/> also lists, are reset with their module
    /// under <see cref="ParameterRandomisation.Reset"/> and kept under <see cref="ParameterRandomisation.Normal"/>.
    /// Under Reset, modules without a <c>weight</c> are left out (PyTorch modules without <c>reset_parameters</c>,
    /// which Quantus does not count, and those of <see cref="ResetLeavesOut"/>).
    /// <para>A tensor listed under several names (an ONNX model lists a Conv's weight under its initializer's name, its
    /// node's and its output's) belongs to one module only, so that it is randomised once and the curve has one point
    /// per module: the first that lists it among the modules named by a model layer, PyTorch paths (no '/') before
    /// ONNX node names, then the others; a module left with no tensor of its own is dropped.</para></summary>
    public static List<(string Module, List<string> Parameters)> Modules(IModel model, ParameterRandomisation kind = ParameterRandomisation.Normal) =>
        Groups(model).Where(g => kind == ParameterRandomisation.Normal || g.Parameters.Any(p => Leaf(p) == "weight")).Reverse().ToList();

    /// <summary>What stops the metrics from randomising the model: no parameters, or none that reset can re-initialise.</summary>
    public static IEnumerable<string> Validate(IModel model, ParameterRandomisation kind)
    {
        if (model.ParameterNames.Count == 0) yield return "the model exposes no parameters to randomise";
        else if (Modules(model, kind).Count == 0)
            yield return "randomise: reset re-initialises modules by their PyTorch parameter names (a module's 'weight', then its 'bias'), and no parameter of this model is named so: use randomise: normal";
    }

    /// <summary>Modules that <see cref="ParameterRandomisation.Reset"/> leaves out although they hold a bias: their
    /// weight is not listed under the module's name (an ONNX export that stores a linear layer as an anonymous MatMul
    /// constant), so PyTorch's reset cannot be applied; the metrics warn with their names.</summary>
    public static List<string> ResetLeavesOut(IModel model) =>
        Groups(model).Where(g => g.Parameters.Any(p => Leaf(p) == "bias") && !g.Parameters.Any(p => Leaf(p) == "weight")).Select(g => g.Module).ToList();

    /// <summary>Warns, naming them, about the modules <see cref="ResetLeavesOut"/> finds, when <paramref name="kind"/> is
    /// Reset.</summary>
    public static void WarnLeftOut(IAnalysisContext ctx, string metric, ParameterRandomisation kind)
    {
        if (kind != ParameterRandomisation.Reset || ResetLeavesOut(ctx.Model) is not { Count: > 0 } left) return;
        ctx.Warn($"{metric}: randomise: reset leaves {left.Count} module(s) as they are, whose bias has no weight under the same name " +
                 $"(a layer exported as an anonymous MatMul constant): {string.Join(", ", left.Take(5))}{(left.Count > 5 ? ", …" : "")}; randomise: normal randomises every tensor");
    }

    /// <summary>The parameter groups in parameter order, each tensor in one group only.</summary>
    static List<(string Module, List<string> Parameters)> Groups(IModel model)
    {
        var groups = model.ParameterNames.Where(n => Randomisable(model, n))
            .GroupBy(p => p.Contains('.') ? p[..p.LastIndexOf('.')] : "")
            .Select(g => (Module: g.Key.Length == 0 ? "(root)" : g.Key, Parameters: g.ToList())).ToList();
        var layers = model.Layers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        var owner = new Dictionary<IntPtr, string>();
        foreach (var (module, parameters) in groups.OrderBy(g => (layers.Contains(g.Module) ? 0 : 1, g.Module.Contains('/') ? 1 : 0)))
            foreach (var p in parameters) owner.TryAdd(ModelParameters.Read(model, p)!.Handle, module);
        return groups
            .Select(g => (g.Module, Parameters: g.Parameters.Where(p => owner[ModelParameters.Read(model, p)!.Handle] == g.Module).ToList()))
            .Where(g => g.Parameters.Count > 0).ToList();
    }

    /// <summary>Puts the modules in reverse execution order when the model supports interventions (one probe forward
    /// records the order in which the modules run: TorchSharp lists parameters in field-declaration order, which need
    /// not be the forward order); otherwise keeps the reverse parameter order.</summary>
    public static List<(string Module, List<string> Parameters)> ExecutionOrder(IAnalysisContext ctx, List<(string Module, List<string> Parameters)> modules)
    {
        if (ctx.Model is not IModelInterventions iv || !ctx.Model.Capabilities.HasFlag(ModelCapabilities.Interventions)) return modules;
        var layers = ctx.Model.Layers.Select(l => l.Name).ToHashSet();
        var seen = new List<string>();
        var handles = new List<IDisposable>();
        try
        {
            foreach (var m in modules.Select(x => x.Module).Where(layers.Contains))
                handles.Add(iv.Intervene(m, t => { if (!seen.Contains(m)) seen.Add(m); return t; }));
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            ctx.Model.Forward(zeros(1, ctx.Input.Channels, ctx.Input.Height, ctx.Input.Width));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return modules;
        }
        finally
        {
            foreach (var h in handles) h.Dispose();
        }
        // Last executed first; modules that did not run keep their (reversed) parameter order after them.
        return modules.OrderBy(m => seen.IndexOf(m.Module) is var i and >= 0 ? seen.Count - i : int.MaxValue).ToList();
    }

    /// <summary>Randomises module number <paramref name="g"/> (top first) in place, as <paramref name="kind"/> says;
    /// the originals are added to <paramref name="saved"/> for <see cref="Restore"/>.</summary>
    public static void Randomise(IAnalysisContext ctx, (string Module, List<string> Parameters) module, int g, ParameterRandomisation kind, int resetSeed, List<(Tensor Live, Tensor Copy)> saved)
    {
        if (kind == ParameterRandomisation.Reset) Reset(ctx.Model, module, resetSeed, saved);
        else Normal(ctx, module.Parameters, g, saved);
    }

    /// <summary>N(0, σ²) values, σ the original's std, seeded from the step seed and <paramref name="g"/>.</summary>
    static void Normal(IAnalysisContext ctx, IEnumerable<string> parameters, int g, List<(Tensor Live, Tensor Copy)> saved)
    {
        using var _ = no_grad();
        using var gen = new Generator((ulong)(uint)(ctx.Seed * 7919 + g * 104729 + 17));
        foreach (var name in parameters)
        {
            var p = Save(ctx.Model, name, saved);
            double std = p.numel() > 1 ? p.detach().to(ScalarType.Float64).std().item<double>() : Math.Abs(p.detach().to(ScalarType.Float64).item<double>());
            if (!double.IsFinite(std) || std == 0) std = 0.01;
            using var rnd = randn(p.shape, dtype: p.dtype, generator: gen) * std;
            p.copy_(rnd);
        }
    }

    /// <summary>PyTorch's reset_parameters of a convolution, linear or norm module after manual_seed(seed + 1): the
    /// weight's draw first, then the bias's, from one generator, into contiguous tensors (the order PyTorch fills them
    /// in), whatever the live parameter's memory layout.</summary>
    static void Reset(IModel model, (string Module, List<string> Parameters) module, int seed, List<(Tensor Live, Tensor Copy)> saved)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var gen = new Generator((ulong)seed + 1);
        string Name(string leaf) => module.Module == "(root)" ? leaf : module.Module + "." + leaf;
        string? Find(string leaf) => module.Parameters.FirstOrDefault(p => p == Name(leaf));
        var weightName = Find("weight") ?? throw new InvalidOperationException($"module '{module.Module}' has no weight to reset");
        var weight = model.GetParameter(weightName)!;
        double bound = 0;
        if (weight.dim() >= 2)
        {
            // torch.nn.init._calculate_fan_in_and_fan_out: size(1) × the receptive field.
            long fanIn = weight.shape[1] * weight.shape.Skip(2).Aggregate(1L, (a, b) => a * b);
            if (fanIn > 0)
            {
                // kaiming_uniform_(a=√5) as torch.nn.init computes it (gain, std, bound), for the same float bound.
                double a = Math.Sqrt(5.0), gain = Math.Sqrt(2.0 / (1 + a * a)), std = gain / Math.Sqrt(fanIn);
                Save(model, weightName, saved).copy_(empty(weight.shape, dtype: weight.dtype).uniform_(-Math.Sqrt(3.0) * std, Math.Sqrt(3.0) * std, generator: gen));
                bound = 1 / Math.Sqrt(fanIn);
            }
        }
        else Save(model, weightName, saved).fill_(1);
        if (Find("bias") is { } biasName && model.GetParameter(biasName) is { } bias)
        {
            var live = Save(model, biasName, saved);
            if (weight.dim() >= 2) { if (bound > 0) live.copy_(empty(bias.shape, dtype: bias.dtype).uniform_(-bound, bound, generator: gen)); }
            else live.zero_();
        }
        // BatchNorm's reset_running_stats.
        foreach (var leaf in Statistics)
            if (model.ParameterNames.Contains(Name(leaf)) && model.GetParameter(Name(leaf)) is { } stat)
            {
                var live = Save(model, Name(leaf), saved);
                if (leaf == "running_var") live.fill_(1); else live.zero_();
            }
    }

    /// <summary>The live parameter, its original saved for <see cref="Restore"/>.</summary>
    static Tensor Save(IModel model, string name, List<(Tensor Live, Tensor Copy)> saved)
    {
        var p = model.GetParameter(name) ?? throw new LoupeException($"parameter '{name}' is listed but not available");
        var copy = p.detach().clone();
        copy.DetachFromDisposeScope();
        saved.Add((p, copy));
        return p;
    }

    /// <summary>Puts back the parameters saved by <see cref="Randomise"/> (last first) and frees the copies.</summary>
    public static void Restore(List<(Tensor Live, Tensor Copy)> saved)
    {
        using var _ = no_grad();
        foreach (var (live, copy) in Enumerable.Reverse(saved)) { live.copy_(copy); copy.Dispose(); }
        saved.Clear();
    }

    static string Leaf(string name) => name[(name.LastIndexOf('.') + 1)..];

    static bool Randomisable(IModel model, string name) =>
        !Statistics.Contains(Leaf(name)) && ModelParameters.Read(model, name) is { } t && t.is_floating_point();
}
