using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
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
    /// reset (mean 0, variance 1). Modules with no weight or bias (class tokens, position embeddings) are left as they
    /// are, as PyTorch modules without <c>reset_parameters</c> are by Quantus.</summary>
    Reset,
}

/// <summary>Options of the metrics that randomise the model's parameters.</summary>
public abstract record RandomisationOptions : MetricOptions
{
    /// <summary>How modules are randomised; null: the metric's default.</summary>
    [Description("how a module's parameters are randomised: reset (PyTorch's reset_parameters after torch.manual_seed(reset_seed + 1) per module, as Quantus: U(±1/√fan_in) weights and biases, norm layers 1 and 0, BatchNorm statistics reset; modules without weight or bias left out) or normal (N(0, σ²), σ the original's std, seeded from the step seed; BatchNorm statistics kept); default: reset for mprt (Quantus), normal for sanity-randomisation (Adebayo et al.)")]
    public ParameterRandomisation? Randomise { get; init; }
    /// <summary>Quantus's seed.</summary>
    [Range(0, int.MaxValue - 1), Description("randomise: reset — Quantus's seed: every module is re-initialised from a generator seeded reset_seed + 1 (Quantus: torch.manual_seed(seed + 1), seed 42 by default), so the same module shapes get the same values as in Quantus and PyTorch")]
    public int ResetSeed { get; init; } = 42;
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
    /// Under Reset, modules with neither a <c>weight</c> nor a <c>bias</c> are left out (PyTorch modules without
    /// <c>reset_parameters</c>, which Quantus does not count).</summary>
    public static List<(string Module, List<string> Parameters)> Modules(IModel model, ParameterRandomisation kind = ParameterRandomisation.Normal) =>
        model.ParameterNames.Where(n => Randomisable(model, n))
            .GroupBy(p => p.Contains('.') ? p[..p.LastIndexOf('.')] : "")
            .Where(g => kind == ParameterRandomisation.Normal || g.Any(p => Leaf(p) is "weight" or "bias"))
            .Select(g => (g.Key.Length == 0 ? "(root)" : g.Key, g.ToList())).Reverse().ToList();

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
        var weightName = Find("weight");
        var weight = weightName is null ? null : model.GetParameter(weightName);
        double bound = 0;
        if (weight is not null && weight.dim() >= 2)
        {
            // torch.nn.init._calculate_fan_in_and_fan_out: size(1) × the receptive field.
            long fanIn = weight.shape[1] * weight.shape.Skip(2).Aggregate(1L, (a, b) => a * b);
            if (fanIn > 0)
            {
                // kaiming_uniform_(a=√5) as torch.nn.init computes it (gain, std, bound), for the same float bound.
                double a = Math.Sqrt(5.0), gain = Math.Sqrt(2.0 / (1 + a * a)), std = gain / Math.Sqrt(fanIn);
                Save(model, weightName!, saved).copy_(empty(weight.shape, dtype: weight.dtype).uniform_(-Math.Sqrt(3.0) * std, Math.Sqrt(3.0) * std, generator: gen));
                bound = 1 / Math.Sqrt(fanIn);
            }
        }
        else if (weight is not null) Save(model, weightName!, saved).fill_(1);
        if (Find("bias") is { } biasName && model.GetParameter(biasName) is { } bias)
        {
            var live = Save(model, biasName, saved);
            if (weight is not null && weight.dim() >= 2) { if (bound > 0) live.copy_(empty(bias.shape, dtype: bias.dtype).uniform_(-bound, bound, generator: gen)); }
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
        !Statistics.Contains(Leaf(name)) && model.GetParameter(name) is { } t && t.is_floating_point();
}
