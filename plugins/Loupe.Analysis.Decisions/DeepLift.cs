using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Decisions;

/// <summary>The reference input of DeepLift (<c>deeplift</c>, <c>layer-deeplift</c>).</summary>
public record DeepLiftReference
{
    /// <summary>Baseline.</summary>
    [Alias("fill"), OrConstant(nameof(BaselineValue)), Description("reference input x′ (also spelled fill): zero (normalised; Captum's default), black, mean, blur, or a constant: one value or one per channel in normalised space (Captum's scalar / per-channel baselines), e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill Baseline { get; init; } = Fill.Zero;
    /// <summary>Constant baseline (older spelling; <c>fill: 0.5</c> binds here).</summary>
    [Description(Perturbation.ConstantDescription + "'fill' (or 'baseline')")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Blur σ for the blur baseline.</summary>
    [Range(0.1, 1000), Description("σ of the blur baseline, in pixels")]
    public double BlurSigma { get; init; } = 5;
    /// <summary>Reference from a file.</summary>
    [FilePath, Description(Perturbation.BaselineFileDescription)]
    public string? BaselineFile { get; init; }
    /// <summary>Per-input references from a folder.</summary>
    [FilePath(Directory = true), Description(Perturbation.BaselineFolderDescription)]
    public string? BaselineFolder { get; init; }

    /// <summary>The reference of a batch.</summary>
    public Tensor Of(AttributionInput input) => Perturbation.BaselineOrFile(input, BaselineFile, BaselineFolder, Baseline, BlurSigma, BaselineValue);

    /// <summary>Validation of the reference options.</summary>
    public IEnumerable<string> Errors(IModel model)
    {
        foreach (var e in Perturbation.BaselineErrors(this, Baseline, BaselineFile, BaselineFolder, BaselineValue, "fill", model.DefaultInput)) yield return e;
    }
}

/// <summary>Options of <c>deeplift</c>.</summary>
public sealed record DeepLiftOptions : DeepLiftReference
{
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description(Perturbation.MultiplyByInputsDescription)]
    public bool MultiplyByInputs { get; init; } = true;
    /// <summary>Captum DeepLift's eps.</summary>
    [Range(0.0, 1e6), Description(DeepLift.EpsDescription)]
    public double Eps { get; init; } = Rescale.DefaultEpsilon;
}

/// <summary>The reference set of DeepLiftShap (<c>deeplift-shap</c>, <c>layer-deeplift-shap</c>).</summary>
public record DeepLiftReferences
{
    /// <summary>Baseline set.</summary>
    [FilePath, Description("a .npy B×C×H×W set of references in normalised input space (B ≥ 2); the map is the mean of DeepLift over them")]
    public string? BaselinesFile { get; init; }
    /// <summary>References drawn from the data source.</summary>
    [Range(2, 4096), Description("instead of baselines_file: draw this many references from the data source (the inputs with the smallest keys splitmix64(seed XOR index·0x9E3779B97F4A7C15), in data order)")]
    public int? BaselinesFromData { get; init; }
    /// <summary>Seed of the draw.</summary>
    [Description("seed of baselines_from_data (default: the step seed)")]
    public int? BaselineSeed { get; init; }
    /// <summary>Pairs per pass.</summary>
    [Range(1, 100_000), Description("input × reference pairs per forward/backward pass (default: as many as fill ~64 MiB of activations, at least 8, within settings.memory_budget_mb)")]
    public int? InternalBatchSize { get; init; }
}

/// <summary>Options of <c>deeplift-shap</c>.</summary>
public sealed record DeepLiftShapOptions : DeepLiftReferences
{
    /// <summary>Captum's multiply_by_inputs.</summary>
    [Description(Perturbation.MultiplyByInputsDescription)]
    public bool MultiplyByInputs { get; init; } = true;
}

/// <summary>DeepLift with the rescale rule (Shrikumar et al. 2017; Captum <c>DeepLift</c>): one forward of the batch
/// [x; x′], the target scores of both halves summed (Captum's main-model hook keeps both), every ReLU and max pool back-propagating Δout/Δin multipliers (Captum's <c>nonlinear</c> and
/// <c>maxpool</c> rules; linear layers keep their gradients), and attribution (x − x′) ⊙ multipliers. Its sum is
/// F(x) − F(x′) (summation to delta). Needs the rescale rule of the backend: the torchvision backend's ReLU modules,
/// residual blocks and max pools; the onnx interpreter's Relu, LeakyRelu, Sigmoid, Tanh, Softmax and MaxPool nodes.</summary>
public sealed class DeepLift : AttributionAnalysis<DeepLiftOptions>, ITakesBaseline
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "deeplift";

    /// <summary>What the <c>eps</c> option does.</summary>
    public const string EpsDescription = "Captum DeepLift's eps: where a non-linearity's input changes by less than this between the input and the reference (|Δin| < eps), it keeps its own gradient instead of Δout/Δin (default 1e-10, Captum's; raise it for float16 models or to silence near-zero divisions)";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(DeepLiftOptions options, AnalysisValidationContext context) => options.Errors(context.Model);

    /// <summary>Multipliers × (x − x′) for rows of inputs and references (same count).</summary>
    public static Tensor Attribute(IAnalysisContext ctx, Tensor x, Tensor reference, TargetSelection selection, int slot, bool multiplyByInputs = true) =>
        AttributeAndSelect(ctx, x, reference, selection, slot, multiplyByInputs).Map;

    /// <summary>Multipliers × (x − x′), and what they explain: <paramref name="selection"/>, or (null) the target's
    /// choice on the inputs' half of the one forward of [x; x′] — its first N rows are the model's output on x, so no
    /// forward of its own is needed to select.</summary>
    static (Tensor Map, TargetSelection Selection) AttributeAndSelect(IAnalysisContext ctx, Tensor x, Tensor reference, TargetSelection? selection, int slot, bool multiplyByInputs = true, double eps = Rescale.DefaultEpsilon)
    {
        using var scope = NewDisposeScope();
        using var threshold = Rescale.WithEpsilon(eps);
        int n = (int)x.shape[0];
        var both = cat([x, reference], 0).detach().requires_grad_(true);
        var firstHalf = Enumerable.Range(0, n).ToArray();
        var rows = firstHalf.Concat(firstHalf).ToArray();
        Tensor g;
        TargetSelection chosen;
        using (((IModelInterventions)ctx.Model).OverrideRelu(ReluRule.Rescale))
        {
            var (_, capture, ti, picked) = Explain.Forward(ctx.Model, ctx.Target, both, [], forGradients: false, selection?.Rows(rows), slot);
            using (capture)
            {
                chosen = selection ?? picked.Rows(firstHalf);                     // rows are selected independently
                var score = ctx.Target.Scores(ti, selection is null ? chosen.Rows(rows) : picked).sum();   // both halves, as Captum's forward hook
                g = CheckedOps.Grad([score], [both])[0].narrow(0, 0, n);
            }
        }
        return (scope.MoveToOuter(multiplyByInputs ? (x - reference) * g : g), chosen);
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(DeepLiftOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var (map, selection) = AttributeAndSelect(ctx, input.Input, options.Of(input), input.Selection, input.Slot, options.MultiplyByInputs, options.Eps);
        return new AttributionResult(map, selection);
    }
}

/// <summary>DeepLiftShap (Lundberg &amp; Lee 2017; Captum <c>DeepLiftShap</c>): DeepLift of each input against every
/// reference of a set (a file, or drawn from the data source by <see cref="DataReferences"/>), averaged over the
/// references (pairs batched).</summary>
public sealed class DeepLiftShap : AttributionAnalysis<DeepLiftShapOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.ReluOverride);
    /// <inheritdoc/>
    public override string ArtifactName => "deeplift-shap";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(DeepLiftShapOptions options, AnalysisValidationContext context) => ReferenceErrors(options);

    /// <summary>Validation of a reference set: a file or a draw from the data, not both.</summary>
    public static IEnumerable<string> ReferenceErrors(DeepLiftReferences options)
    {
        if ((options.BaselinesFile is null) == (options.BaselinesFromData is null))
            yield return "give either 'baselines_file' or 'baselines_from_data' (the reference set)";
        if (options.BaselineSeed is not null && options.BaselinesFromData is null)
            yield return "'baseline_seed' only applies with 'baselines_from_data'";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(DeepLiftShapOptions options, AttributionInput input)
    {
        var (_, _, selection) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        var map = OverReferences(options, input.Context, input.Input, selection, (xi, ri, sel) => DeepLift.Attribute(input.Context, xi, ri, sel, input.Slot, options.MultiplyByInputs));
        return new AttributionResult(map, selection);
    }

    /// <summary>The mean over the reference set of <paramref name="attribute"/>(inputs, references, selection) on
    /// input × reference pairs, batched (pair p = i·B + j: input i with reference j, Captum's repeat_interleave / repeat
    /// order); the result has the attribution's shape per input.</summary>
    public static Tensor OverReferences(DeepLiftReferences options, IAnalysisContext ctx, Tensor x, TargetSelection selection, Func<Tensor, Tensor, TargetSelection, Tensor> attribute)
    {
        long n = x.shape[0];
        var refs = DataReferences.Set(ctx, x, options.BaselinesFile, options.BaselinesFromData, options.BaselineSeed, 2, " (a single reference: use deeplift)");
        long b = refs.shape[0];
        long perPass = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.InternalBatchSize, gradients: true) / 2);
        var parts = new List<Tensor>();
        for (long p0 = 0; p0 < n * b; p0 += perPass)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long k = Math.Min(perPass, n * b - p0);
            var pairs = arange(p0, p0 + k);
            var xi = x.index_select(0, pairs.div(b, rounding_mode: RoundingMode.floor));
            var ri = refs.index_select(0, pairs.remainder(b));
            var sel = selection.Rows(Enumerable.Range((int)p0, (int)k).Select(p => (int)(p / b)).ToArray());
            parts.Add(chunk.MoveToOuter(attribute(xi, ri, sel)));
        }
        var all = cat(parts, 0);
        return all.view([n, b, .. all.shape.Skip(1)]).mean([1]);
    }
}

/// <summary>References drawn from the data source with a documented rule a test can reproduce: input i (0-based, in data
/// order) gets the key splitmix64(seed XOR i·0x9E3779B97F4A7C15) (64-bit, wrapping), and the <c>count</c> inputs with
/// the smallest keys are the references, in data order. One pass over the data, at most <c>count</c> inputs kept; the
/// set is kept in the run cache for the step's later batches.</summary>
public static class DataReferences
{
    /// <summary>splitmix64's finaliser over seed XOR index·golden-ratio constant.</summary>
    public static ulong Key(int seed, long index)
    {
        unchecked
        {
            ulong z = (ulong)(uint)seed ^ ((ulong)index * 0x9E3779B97F4A7C15UL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    /// <summary>A reference set B×C×H×W for inputs like <paramref name="x"/>: the .npy <paramref name="file"/>, else
    /// <paramref name="fromData"/> inputs drawn from the data source (<see cref="Draw"/>, seed <paramref name="seed"/> or
    /// the step's); an error naming the file unless it holds at least <paramref name="minimum"/> references of the
    /// inputs' shape (<paramref name="hint"/> follows the message).</summary>
    public static Tensor Set(IAnalysisContext ctx, Tensor x, string? file, int? fromData, int? seed, int minimum, string hint = "")
    {
        var refs = file is not null ? Npy.Read(file).ToTensor()
            : Draw(ctx, fromData ?? throw new ArgumentNullException(nameof(fromData)), seed ?? ctx.Seed, "baselines_from_data");
        if (refs.dim() != 4 || refs.shape[0] < minimum || refs.shape[1] != x.shape[1] || refs.shape[2] != x.shape[2] || refs.shape[3] != x.shape[3])
            throw new LoupeException($"{file ?? "baselines_from_data"}: the references must be B×{x.shape[1]}×{x.shape[2]}×{x.shape[3]} with B ≥ {minimum}{hint}; they are {string.Join("×", refs.shape)}");
        return refs;
    }

    /// <summary>The drawn references (B×C×H×W, normalised), B = min(count, inputs).</summary>
    public static Tensor Draw(IAnalysisContext ctx, int count, int seed, string option)
    {
        if (ctx.Shard is not null)
            throw new LoupeException($"{option}: under --shard each shard sees only its own rows, so the drawn references would differ per shard; write them to a file and use baselines_file");
        var key = $"data-references:{count}:{seed}";
        if (ctx.RunCache.TryGetValue(key, out var cached) && cached is NdArray kept) return kept.ToTensor();
        var chosen = new List<(ulong Key, long Index, NdArray Input)>();
        long index = 0;
        foreach (var batch in ctx.Batches())
        {
            for (int i = 0; i < batch.Ids.Length; i++, index++)
            {
                var k = Key(seed, index);
                if (chosen.Count == count && k >= chosen.Max(c => c.Key)) continue;
                if (chosen.Count == count) chosen.Remove(chosen.MaxBy(c => c.Key));
                chosen.Add((k, index, NdArray.FromTensor(batch.Input[i])));
            }
        }
        if (chosen.Count == 0) throw new LoupeException($"{option}: the data source is empty");
        using var scope = NewDisposeScope();
        var refs = stack(chosen.OrderBy(c => c.Index).Select(c => c.Input.ToTensor()).ToArray(), 0);
        var result = NdArray.FromTensor(refs);
        ctx.RunCache[key] = result;
        return scope.MoveToOuter(result.ToTensor());
    }
}
