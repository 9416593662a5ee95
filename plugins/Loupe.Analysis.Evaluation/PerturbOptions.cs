using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>What replaces a perturbed feature.</summary>
public enum Fill
{
    /// <summary>The image's minimum over all its values (Quantus's <c>"black"</c>).</summary>
    Min,
    /// <summary>A black pixel (0 before normalisation).</summary>
    Black,
    /// <summary>Zero in normalised space (the dataset mean colour).</summary>
    Zero,
    /// <summary>The image's mean over all its values (Quantus's <c>"mean"</c> where a metric perturbs the input once).</summary>
    Mean,
    /// <summary>Quantus's <c>"mean"</c> in the metrics that perturb cumulatively (pixel-flipping, selectivity,
    /// region-perturbation, irof, infidelity's blocks): each step's pixels take the mean of the array as perturbed so far (region metrics:
    /// of the edge-padded array Quantus perturbs); <see cref="Mean"/> where a metric perturbs once.</summary>
    RunningMean,
    /// <summary>The image's maximum over all its values (Quantus's <c>"white"</c>).</summary>
    Max,
    /// <summary>Uniform noise U[0, 1) in pixel space, seeded per input (Quantus's <c>"uniform"</c> on unnormalised images).</summary>
    Uniform,
    /// <summary>Uniform noise U[0, 1) in the model's input space (normalised values), seeded per input: Quantus's
    /// <c>"uniform"</c> as it draws on the tensors it is given.</summary>
    UniformInput,
    /// <summary>One U[0, 1) value per input and perturbation (a step, region, segment, subset or sample), in the model's
    /// input space, written to every value that perturbation replaces: Quantus's batched <c>"uniform"</c>.</summary>
    UniformStep,
    /// <summary>The value plus N(perturb_mean, perturb_std²) noise, per element, seeded per input (Quantus's
    /// <c>perturb_func=batch_gaussian_noise</c>).</summary>
    GaussianNoise,
    /// <summary>The value plus U[−lower_bound, lower_bound] noise, or U[lower_bound, upper_bound] when that is given,
    /// per element, seeded per input (Quantus's <c>perturb_func=batch_uniform_noise</c>).</summary>
    UniformNoise,
}

/// <summary>The noise of the additive fills (<see cref="Fill.GaussianNoise"/>, <see cref="Fill.UniformNoise"/>), with
/// Quantus's defaults.</summary>
public sealed record NoiseFill(double Mean = 0, double Std = 0.01, double Lower = 0.02, double? Upper = null)
{
    /// <summary>One draw of the noise of <paramref name="fill"/> of this shape from <paramref name="g"/>.</summary>
    public Tensor Draw(Fill fill, long[] shape, Generator g) => fill == Fill.GaussianNoise
        ? randn(shape, generator: g) * (float)Std + (float)Mean
        : rand(shape, generator: g) * (float)((Upper ?? Lower) - (Upper is null ? -Lower : Lower)) + (float)(Upper is null ? -Lower : Lower);

    /// <summary>Whether the fill adds noise to the value it replaces.</summary>
    public static bool Adds(Fill? fill) => fill is Fill.GaussianNoise or Fill.UniformNoise;
}

/// <summary>Options shared by the metrics that perturb features.</summary>
public abstract record PerturbOptions : NormalisedMetricOptions, IConstantFill
{
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the channel-summed map (after normalise, as Quantus) (default: Quantus's per metric)")]
    public bool? Abs { get; init; }
    /// <summary>Normalise.</summary>
    [Description("rescale the channel-summed map first, per map: true (Quantus normalise with its default normalise_func, normalise_by_max), false, or " + Normalisations.Functions + "; default: Quantus's per metric")]
    public Normalisation? Normalise { get; init; }
    /// <summary>Replacement.</summary>
    [OrConstant(nameof(BaselineValue)), Description("what replaces a perturbed pixel (all channels): min (Quantus 'black': the image minimum), max (Quantus 'white': the image maximum), black, zero, mean (the image's mean), running-mean (Quantus's 'mean' in the cumulative metrics, pixel-flipping, selectivity, region-perturbation, irof, infidelity's blocks: the mean of the image as perturbed so far, recomputed before each step; elsewhere the image's mean), uniform (U[0,1) pixels), uniform-input (U[0,1) in the model's input space, one value per element), uniform-step (one U[0,1) value per input and perturbation step, in the model's input space: Quantus's batched 'uniform'), gaussian-noise or uniform-noise (the value plus noise: Quantus's perturb_func batch_gaussian_noise / batch_uniform_noise, see perturb_mean, perturb_std, lower_bound, upper_bound), or a constant in the model's input space (Quantus's numeric perturb_baseline): one value or one per channel, e.g. 0.5 or [0.1, 0.2, 0.3]")]
    public Fill? Baseline { get; init; }
    /// <summary>Constant replacement (<c>baseline: 0.5</c> binds here).</summary>
    [Description("a constant given to 'baseline': one value or one per channel, in the model's input space")]
    public float[]? BaselineValue { get; init; }
    /// <summary>Low end of the uniform fills.</summary>
    [Range(-1e6, 1e6), Description("the uniform fills draw U[uniform_low, uniform_high) (Quantus's uniform_low: 0)")]
    public double UniformLow { get; init; }
    /// <summary>High end of the uniform fills.</summary>
    [Range(-1e6, 1e6), Description("the uniform fills draw U[uniform_low, uniform_high) (Quantus's uniform_high: 1)")]
    public double UniformHigh { get; init; } = 1;
    /// <summary>Baseline images.</summary>
    [FilePath(Directory = true), Description("folder of baseline images, one per input id: <id>.npy, C×H×W (or H×W for every channel) in the model's input space at its input size (Quantus's array perturb_baseline, e.g. a blurred copy); replaces 'baseline'")]
    public string? BaselineImages { get; init; }
    /// <summary>Gaussian noise mean.</summary>
    [Range(-1e6, 1e6), Description("baseline gaussian-noise: the noise's mean, in the model's input space (Quantus perturb_mean: 0)")]
    public double PerturbMean { get; init; }
    /// <summary>Gaussian noise σ.</summary>
    [Range(0.0, 1e6), Description("baseline gaussian-noise: the noise's σ (Quantus perturb_std: 0.01)")]
    public double PerturbStd { get; init; } = 0.01;
    /// <summary>Uniform noise bound.</summary>
    [Range(-1e6, 1e6), Description("baseline uniform-noise: U[−lower_bound, lower_bound], or U[lower_bound, upper_bound] when that is given (Quantus lower_bound: 0.02)")]
    public double LowerBound { get; init; } = 0.02;
    /// <summary>Uniform noise upper bound.</summary>
    [Range(-1e6, 1e6), Description("baseline uniform-noise: the upper end of U[lower_bound, upper_bound] (Quantus upper_bound: none)")]
    public double? UpperBound { get; init; }
    /// <summary>The additive noise these options ask for.</summary>
    public NoiseFill NoiseOf() => new(PerturbMean, PerturbStd, LowerBound, UpperBound);
    /// <summary>The baseline these options ask for, or <paramref name="fallback"/> (the metric's default).</summary>
    public Tensor BaselineOf(MetricBatch b, Fill fallback) => BaselineImages is { } folder ? b.BaselineImages(folder)
        : b.Baseline(Baseline ?? fallback, BaselineValue, UniformLow, UniformHigh, NoiseOf());
    /// <summary>The fill's companions set without their fill (the metric's default <paramref name="fallback"/> when
    /// <c>baseline</c> is not given): perturb_mean / perturb_std without gaussian-noise, lower_bound / upper_bound
    /// without uniform-noise, uniform_low / uniform_high without a uniform fill.</summary>
    public IEnumerable<string> FillOptionErrors(Fill fallback)
    {
        var fill = FillOf(fallback);
        foreach (var e in OptionRules.OnlyWith(this, fill == Fill.GaussianNoise, "baseline: gaussian-noise", nameof(PerturbMean), nameof(PerturbStd))) yield return e;
        foreach (var e in OptionRules.OnlyWith(this, fill == Fill.UniformNoise, "baseline: uniform-noise", nameof(LowerBound), nameof(UpperBound))) yield return e;
        foreach (var e in OptionRules.OnlyWith(this, fill is Fill.Uniform or Fill.UniformInput or Fill.UniformStep, "baseline: uniform, uniform-input or uniform-step", nameof(UniformLow), nameof(UniformHigh))) yield return e;
    }

    /// <summary>The fill these options ask for (a constant or baseline images count as none of the named ones).</summary>
    public Fill? FillOf(Fill fallback) => BaselineValue is null && BaselineImages is null ? Baseline ?? fallback : null;
    /// <summary>Softmax.</summary>
    [Description("score the class probability (true) or the target logit (false); default: Quantus's per metric")]
    public bool? Softmax { get; init; }
    /// <summary>Copies per forward.</summary>
    [Range(1, 100_000), Description("perturbed copies per forward pass (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
}
