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
}

/// <summary>Noise tunnel: wraps any attribution step and combines its maps over noisy copies of each input (SmoothGrad,
/// SmoothGrad², VarGrad) — or, for a method whose map follows from a raw result (layer attributions, Captum-convention
/// CAMs: <see cref="AttributionResult.MapOfRaw"/>), its raw results, as Captum's NoiseTunnel combines what the method
/// returns (the layer-resolution attributions), the map then made of the combination. The target is fixed on the clean input; noise is drawn from the step's seed and the input's id, so an image gets the
/// same noise whatever its batch, the data order or the shard — or read from fixed draws (<c>noise_file</c>, <c>noise_dir</c>).</summary>
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
        foreach (var e in OptionRules.OnlyWith(options, options.Stdevs is null, "the noise without 'stdevs' (an absolute σ replaces the relative one)", nameof(options.NoiseLevel))) yield return e;
    }

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
            var noisy = (x.unsqueeze(0) + noise).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var rows = Enumerable.Range(0, k).SelectMany(_ => Enumerable.Range(0, (int)n)).ToArray();
            // Image-dependent baselines (mean, blur) of the clean rows and each input's own baseline file, as Captum's
            // NoiseTunnel keeps the given baseline.
            var clean = x.unsqueeze(0).expand([k, .. x.shape]).reshape(k * n, x.shape[1], x.shape[2], x.shape[3]);
            var result = inner.Attribute(innerStep.Options, new AttributionInput(ctx, noisy, selection.Rows(rows), input.Slot) { BaselineSource = clean, SourceIds = input.SourceIdsOf(rows) });
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
