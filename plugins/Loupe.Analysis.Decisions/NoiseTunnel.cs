using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>How noisy maps are combined (Captum <c>NoiseTunnel</c>'s nt_type).</summary>
public enum NoiseTunnelType
{
    /// <summary>Mean of the maps (Smilkov et al. 2017).</summary>
    Smoothgrad,
    /// <summary>Mean of the squared maps.</summary>
    SmoothgradSq,
    /// <summary>Variance of the maps (Adebayo et al. 2018).</summary>
    Vargrad,
}

/// <summary>Options of <c>noise-tunnel</c>.</summary>
public sealed record NoiseTunnelOptions
{
    /// <summary>The wrapped attribution step.</summary>
    [Required, Description("the attribution step to smooth: { uses: saliency, with: { ... } }")]
    public StepReference? Inner { get; init; }
    /// <summary>Noisy samples per input.</summary>
    [Range(1, 100_000), Description("noisy copies per input (n; default 50, Smilkov et al.'s; Captum NoiseTunnel's nt_samples default is 5)")]
    public int Samples { get; init; } = 50;
    /// <summary>Noise level.</summary>
    [Range(0.0, 100.0), Description("σ = noise_level · (max(x) − min(x)) per input (Smilkov et al.: 0.15, the default; Captum's default is an absolute stdevs: 1.0)")]
    public double NoiseLevel { get; init; } = 0.15;
    /// <summary>Absolute noise σ.</summary>
    [Range(0.0, 1e6), Description("absolute σ of the noise in normalised input space, as Captum's stdevs (instead of noise_level, which is then refused)")]
    public double? Stdevs { get; init; }
    /// <summary>Fixed draws shared by every input.</summary>
    [FilePath, Description("fixed standard-normal draws z instead of the seeded ones: a .npy S×C×H×W (S ≥ samples) used for every input; noise = σ·z")]
    public string? NoiseFile { get; init; }
    /// <summary>Fixed draws per input.</summary>
    [FilePath(Directory = true), Description("fixed standard-normal draws per input: a folder of <input id>.npy files, each S×C×H×W (S ≥ samples); noise = σ·z")]
    public string? NoiseDir { get; init; }
    /// <summary>Combination.</summary>
    [Description("smoothgrad (mean), smoothgrad-sq (mean of squares) or vargrad (variance)")]
    public NoiseTunnelType Type { get; init; } = NoiseTunnelType.Smoothgrad;
    /// <summary>Copies per inner call.</summary>
    [Range(1, 100_000), Description("noisy copies (× inputs) per call of the inner method (default: all samples at once, within 64 RGB 224² images)")]
    public int? SamplesPerBatch { get; init; }
    /// <summary>Zennit's noise-free last iteration.</summary>
    [Description("the last of the samples is the clean input, without noise (Zennit's SmoothGrad: its last iteration adds none, so samples: 1 is the gradient; Zennit's defaults are samples 20, noise_level 0.1)")]
    public bool CleanLast { get; init; }
    /// <summary>Captum's draw_baseline_from_distrib.</summary>
    [Description("Captum NoiseTunnel's draw_baseline_from_distrib: each noisy copy gets a baseline drawn at random (with replacement, seeded per input) from a set — baselines_file or baselines_from_data — which replaces the inner method's own baseline; the inner method must take a baseline (integrated-gradients, deeplift, occlusion, kernel-shap, …)")]
    public bool DrawBaselineFromDistrib { get; init; }
    /// <summary>The baseline distribution.</summary>
    [FilePath, Description("with draw_baseline_from_distrib: a .npy B×C×H×W set of baselines in normalised input space (Captum's baselines tensor)")]
    public string? BaselinesFile { get; init; }
    /// <summary>The baseline distribution drawn from the data.</summary>
    [Range(1, 4096), Description("with draw_baseline_from_distrib, instead of baselines_file: this many inputs of the data source (chosen as deeplift-shap's baselines_from_data)")]
    public int? BaselinesFromData { get; init; }
    /// <summary>Seed of the data draw.</summary>
    [Description("seed of baselines_from_data (default: the step seed)")]
    public int? BaselineSeed { get; init; }
    /// <summary>Fixed baseline indices.</summary>
    [FilePath, Description("with draw_baseline_from_distrib: fixed draws instead of the seeded ones, a .npy of S ≥ samples integers in 0..B−1 (copy s of every input takes baseline [s]; Captum's np.random.choice indices of one input)")]
    public string? BaselineIndicesFile { get; init; }
}

/// <summary>Noise tunnel: wraps any attribution step and combines its maps over noisy copies of each input (SmoothGrad,
/// SmoothGrad², VarGrad) — or, for a method whose map follows from a raw result (layer attributions, Captum-convention
/// CAMs: <see cref="AttributionResult.MapOfRaw"/>), its raw results, as Captum's NoiseTunnel combines what the method
/// returns (the layer-resolution attributions), the map then made of the combination. The target is fixed on the clean input; noise is drawn from the step's seed and the input's id, so an image gets the
/// same noise whatever its batch, the data order or the shard — or read from fixed draws (<c>noise_file</c>, <c>noise_dir</c>).
/// With <c>draw_baseline_from_distrib</c> each copy also gets a baseline drawn from a set (Captum's option of that name,
/// which draws n_samples · N indices with replacement), given to the inner method as <see cref="AttributionInput.Baselines"/>.</summary>
public sealed class NoiseTunnel : AttributionAnalysis<NoiseTunnelOptions>
{
    /// <inheritdoc/>
    protected override OverlayStyle? DefaultOverlay => OverlayStyle.Gradient;
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "noise-tunnel";
    /// <summary>The combined raw results of a layer method or CAM: <c>&lt;id&gt;.noise-tunnel-layer.npy</c>.</summary>
    protected override string RawName => ArtifactName + "-layer";

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(NoiseTunnelOptions options, AnalysisValidationContext context)
    {
        var inner = context.Referenced(options.Inner)?.Analysis;
        if (inner is not null and not IAttribution)
            yield return $"inner step '{options.Inner!.Uses}' is not an attribution method (it must produce one map per input, like saliency or integrated-gradients)";
        if (inner is NoiseTunnel) yield return "noise-tunnel cannot wrap another noise-tunnel";
        if (inner is IFixedMaps) yield return $"inner step '{options.Inner!.Uses}' gives fixed maps of the inputs as they are; noise-tunnel explains noisy copies of them";
        if (options.NoiseFile is not null && options.NoiseDir is not null) yield return "give either 'noise_file' or 'noise_dir', not both";
        foreach (var e in BaselineDrawErrors(options, inner)) yield return e;
        foreach (var e in OptionRules.OnlyWith(options, options.Stdevs is null, "the noise without 'stdevs' (an absolute σ replaces the relative one)", nameof(options.NoiseLevel))) yield return e;
    }

    static IEnumerable<string> BaselineDrawErrors(NoiseTunnelOptions o, IAnalysis? inner)
    {
        bool set = o.BaselinesFile is not null || o.BaselinesFromData is not null;
        if (!o.DrawBaselineFromDistrib)
        {
            if (set || o.BaselineIndicesFile is not null || o.BaselineSeed is not null)
                yield return "'baselines_file', 'baselines_from_data', 'baseline_seed' and 'baseline_indices_file' only apply with 'draw_baseline_from_distrib: true' (a baseline per input: give the inner step a baseline_folder)";
            yield break;
        }
        if ((o.BaselinesFile is null) == (o.BaselinesFromData is null))
            yield return "draw_baseline_from_distrib: give either 'baselines_file' or 'baselines_from_data' (the set the baselines are drawn from)";
        if (o.BaselineSeed is not null && o.BaselinesFromData is null) yield return "'baseline_seed' only applies with 'baselines_from_data'";
        if (inner is not null and not ITakesBaseline)
            yield return $"draw_baseline_from_distrib: inner step '{o.Inner!.Uses}' takes no baseline (use a method that compares with one: integrated-gradients, deeplift, layer-integrated-gradients, occlusion, feature-ablation, shapley-sampling, kernel-shap, lime, …)";
    }

    /// <summary>Baseline indices per input and copy (N×S, int64) in 0..<paramref name="count"/> − 1: a file's, or drawn
    /// uniformly with replacement from a stream per input id (the step seed's, apart from the noise's) or, without ids,
    /// from <paramref name="stream"/>.</summary>
    static Tensor BaselineIndices(NoiseTunnelOptions o, IAnalysisContext ctx, string[]? ids, long n, long count, Generator stream)
    {
        if (o.BaselineIndicesFile is { } file)
        {
            var t = Npy.Read(file).ToTensor().flatten();
            if (t.shape[0] < o.Samples) throw new LoupeException($"{file}: baseline_indices_file holds {t.shape[0]} indices, fewer than samples ({o.Samples})");
            var idx = t.narrow(0, 0, o.Samples);
            if (!(idx == idx.round()).all().item<bool>() || idx.min().item<float>() < 0 || idx.max().item<float>() >= count)
                throw new LoupeException($"{file}: baseline_indices_file must hold integers in 0..{count - 1} (the set has {count} baselines)");
            return idx.to(ScalarType.Int64).unsqueeze(0).expand(n, -1);
        }
        var gens = InputSeeds.Generators(unchecked(ctx.Seed ^ BaselineStream), ids);
        try
        {
            return gens is null ? (rand([n, o.Samples], generator: stream) * count).floor().clamp_max(count - 1).to(ScalarType.Int64)
                : stack(gens.Select(g => (rand(o.Samples, generator: g) * count).floor().clamp_max(count - 1).to(ScalarType.Int64)).ToArray());
        }
        finally { if (gens is not null) foreach (var g in gens) g.Dispose(); }
    }

    /// <summary>Mixed into the step seed for the baseline draws, so that they leave the noise draws as they are.</summary>
    const int BaselineStream = 0x2545F491;

    /// <summary>The first <paramref name="samples"/> fixed draws of a file (S×C×H×W), checked against the input shape.</summary>
    static Tensor Draws(string file, Tensor x, int samples)
    {
        var a = Npy.Read(file);
        long c = x.shape[1], h = x.shape[2], w = x.shape[3];
        if (a.Shape.Length != 4 || a.Shape[0] < samples || a.Shape[1] != c || a.Shape[2] != h || a.Shape[3] != w)
            throw new LoupeException($"{file}: noise draws of shape ({string.Join("×", a.Shape)}) do not fit: expected S×{c}×{h}×{w} with S ≥ samples ({samples})");
        return a.ToTensor().narrow(0, 0, samples);
    }

    /// <summary>Fixed draws for the batch, samples × N × C×H×W, or null when the noise is seeded.</summary>
    static Tensor? FixedDraws(NoiseTunnelOptions o, Tensor x, string[]? ids)
    {
        long n = x.shape[0];
        if (o.NoiseFile is { } file) return Draws(file, x, o.Samples).unsqueeze(1).expand(-1, n, -1, -1, -1);
        if (o.NoiseDir is not { } dir) return null;
        if (ids is null) throw new LoupeException("noise_dir needs input ids (the step runs on copies without ids here); use noise_file");
        return stack(ids.Select(id =>
        {
            var path = Path.Combine(dir, id + ".npy");
            var baseId = System.Text.RegularExpressions.Regex.Replace(id, @"\.top\d+$", "");
            if (!File.Exists(path) && baseId != id) path = Path.Combine(dir, baseId + ".npy");
            if (!File.Exists(path)) throw new LoupeException($"noise_dir: no draws for input '{baseId}': {path} not found");
            return Draws(path, x, o.Samples);
        }).ToArray(), 1);
    }

    Generator? _generator;

    /// <inheritdoc/>
    public override AttributionResult Attribute(NoiseTunnelOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var innerStep = ctx.Referenced(options.Inner!);
        var inner = (IAttribution)innerStep.Analysis;
        var x = input.Input;
        long n = x.shape[0];
        // Noise per input id (the same for an image whatever its batch or shard); a step-level stream for inputs
        // without ids (e.g. perturbed copies inside a metric).
        var perInput = InputSeeds.Generators(ctx.Seed, input.Ids);
        if (perInput is null) _generator ??= new Generator((ulong)ctx.Seed);
        var (_, _, selection) = Explain.Scores(ctx, x, input.Selection, input.Slot);
        var range = (x.flatten(1).amax([1]) - x.flatten(1).amin([1])).view(n, 1, 1, 1);
        var sigma = options.Stdevs is { } sd ? full([n, 1, 1, 1], (float)sd) : range * (float)options.NoiseLevel;
        var draws = FixedDraws(options, x, input.Ids);
        Tensor? refs = null, indices = null;
        if (options.DrawBaselineFromDistrib)
        {
            refs = DataReferences.Set(ctx, x, options.BaselinesFile, options.BaselinesFromData, options.BaselineSeed, 1);
            indices = BaselineIndices(options, ctx, input.Ids, n, refs.shape[0], _generator ??= new Generator((ulong)ctx.Seed));
        }
        long perCall = Math.Max(1, Explain.CopiesPerForward(ctx, x, options.SamplesPerBatch, gradients: true) / n);
        Tensor? sum = null, sumSq = null;
        // Combined: the inner's raw results where its map follows from them (layer methods, Captum-convention CAMs:
        // Captum's NoiseTunnel combines what the method returns), else its maps.
        Func<Tensor, Tensor>? mapOfRaw = null;
        for (int s0 = 0; s0 < options.Samples; s0 += (int)perCall)
        {
            using var chunk = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            int k = (int)Math.Min(perCall, options.Samples - s0);
            var noise = (draws is not null ? draws.narrow(0, s0, k)
                : perInput is null ? randn([k, x.shape[0], x.shape[1], x.shape[2], x.shape[3]], generator: _generator)
                : InputSeeds.Randn(perInput, [k, x.shape[1], x.shape[2], x.shape[3]])) * sigma.unsqueeze(0);
            if (options.CleanLast && s0 + k == options.Samples) noise[k - 1].zero_();   // Zennit: the last copy is x itself
            var noisy = (x.unsqueeze(0) + noise).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var rows = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            // Image-dependent baselines (mean, blur) of the clean rows and each input's own baseline file, as Captum's
            // NoiseTunnel keeps the given baseline.
            var clean = x.unsqueeze(0).expand([k, .. x.shape]).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var result = inner.Attribute(innerStep.Options, new AttributionInput(ctx, noisy, selection.Rows(rows), input.Slot) {
                BaselineSource = clean, SourceIds = input.SourceIdsOf(rows),
                // Copy-major rows, as the noisy copies: copy s of input i takes baseline indices[i, s].
                Baselines = refs?.index_select(0, indices!.narrow(1, s0, k).t().reshape(-1)),
            });
            if (s0 == 0) mapOfRaw = result.Raw is not null ? result.MapOfRaw : null;
            var maps = mapOfRaw is not null ? result.Raw! : result.Map;
            var shaped = maps.view([k, n, .. maps.shape.Skip(1)]);
            var s1 = shaped.sum(0, keepdim: false); var s2 = (shaped * shaped).sum(0, keepdim: false);
            sum = sum is null ? chunk.MoveToOuter(s1) : chunk.MoveToOuter(sum + s1);
            sumSq = sumSq is null ? chunk.MoveToOuter(s2) : chunk.MoveToOuter(sumSq + s2);
        }
        if (perInput is not null) foreach (var g in perInput) g.Dispose();
        var mean = sum! / options.Samples;
        var meanSq = sumSq! / options.Samples;
        var combined = options.Type switch
        {
            NoiseTunnelType.Smoothgrad => mean,
            NoiseTunnelType.SmoothgradSq => meanSq,
            _ => meanSq - mean * mean,
        };
        return mapOfRaw is null ? new AttributionResult(combined, selection)
            : new AttributionResult(mapOfRaw(combined), selection, combined) { MapOfRaw = mapOfRaw };
    }
}
