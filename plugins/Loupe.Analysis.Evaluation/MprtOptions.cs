using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Variant of <c>mprt</c>.</summary>
public enum MprtVariant
{
    /// <summary>Smooth MPRT: maps averaged over noisy copies of the input before they are compared.</summary>
    Smooth,
    /// <summary>Efficient MPRT: the rise in the maps' histogram entropy when the model is randomised.</summary>
    Efficient,
}

/// <summary>Order in which <c>mprt</c> randomises the modules (Quantus <c>layer_order</c>).</summary>
public enum MprtOrder
{
    /// <summary>Cascading from the first module the input meets to the output (Quantus's default for SmoothMPRT and EfficientMPRT).</summary>
    BottomUp,
    /// <summary>Cascading from the output module down to the input (Adebayo et al.'s cascade).</summary>
    TopDown,
    /// <summary>One module at a time on the intact model, in bottom-up order.</summary>
    Independent,
}

/// <summary>Options of <c>mprt</c>.</summary>
public sealed record MprtOptions : RandomisationOptions
{
    /// <summary>What a map's values are.</summary>
    [Description("pixels (the default: a per-channel map summed over its channels, signed, as quantus.explain reduces the maps it gives Quantus's MPRT variants — SmoothMPRT always calls it) or values (every value of the map as the method gives it, a per-channel map's C·H·W values, as Quantus flattens a per-channel a_batch or explain_func output)")]
    public FeatureUnit Features { get; init; }

    /// <summary>Variant.</summary>
    [Description("smooth (sMPRT: Spearman of noise-averaged |maps|, intact vs randomised model; lower is better) or efficient (eMPRT: relative rise of the map's histogram entropy, randomised over intact; higher is better)")]
    public MprtVariant Variant { get; init; } = MprtVariant.Smooth;
    /// <summary>Layer order.</summary>
    [Description("order of randomisation: bottom-up (cascading from the input side, the default of Quantus's SmoothMPRT and EfficientMPRT; its plain MPRT's is top_down), top-down (cascading from the output) or independent (one module at a time); the score is the curve's last point")]
    public MprtOrder Order { get; init; } = MprtOrder.BottomUp;
    /// <summary>Per-layer curve.</summary>
    [Description("compute the curve after every module (true, Quantus skip_layers: false) or only the last point (false: two map evaluations instead of one per module)")]
    public bool PerLayer { get; init; } = true;
    /// <summary>Noisy copies.</summary>
    [Range(1, 100_000), Description("smooth: copies averaged per map, the last one without noise (Quantus nr_samples: 50)")]
    public int Samples { get; init; } = 50;
    /// <summary>Noise magnitude.</summary>
    [Range(0.0, 1000.0), Description("smooth: noise σ as a fraction of the input's value range max − min (Quantus noise_magnitude: 0.1)")]
    public double NoiseMagnitude { get; init; } = 0.1;
    /// <summary>Histogram bins.</summary>
    [Range(2, 100_000), Description("efficient: bins of the histogram of map values whose entropy is the map's complexity (Quantus n_bins: 100)")]
    public int Bins { get; init; } = 100;
    /// <summary>Quantus's rule for the bins.</summary>
    [Description("efficient: 'bins' from every map of the run by Quantus's rule (complexity_func_kwargs rule): freedman-diaconis, scott, square-root, sturges or rice, clamped to [min_bins, max_bins]; as Quantus, the sample size n is the number of axes of one explanation (3), so square-root, sturges and rice give min_bins; not under --shard")]
    public BinRule? BinsRule { get; init; }
    /// <summary>Fewest bins.</summary>
    [Range(1, 100_000), Description("efficient with bins_rule: the fewest bins (Quantus min_n_bins: 10)")]
    public int MinBins { get; init; } = 10;
    /// <summary>Most bins.</summary>
    [Range(1, 100_000), Description("efficient with bins_rule: the most bins (Quantus max_n_bins: 200)")]
    public int MaxBins { get; init; } = 200;
    /// <summary>Similarity (sMPRT).</summary>
    [Description("smooth: how a randomised model's map is compared with the intact one (Quantus similarity_func): spearman (the default), pearson, kendall (τ-b) or flat-ssim (Quantus's ssim: skimage's SSIM of the flattened maps)")]
    public MapSimilarity Similarity { get; init; } = DefaultSimilarity;
    /// <summary>The default of <see cref="Similarity"/>.</summary>
    public const MapSimilarity DefaultSimilarity = MapSimilarity.Spearman;
    /// <summary>Normalise.</summary>
    [Description("rescale each map (smooth: after averaging), per map, before abs and the comparison: true (Quantus's default function of both variants, second-moment), false, or " + Normalisations.Functions + "; default: on for smooth (Quantus sMPRT), off for efficient (Quantus eMPRT); Quantus's plain MPRT normalises by max. Spearman, Pearson and Kendall do not change under a positive scale; flat-ssim does")]
    public Normalisation? Normalise { get; init; }
    /// <summary>Complexity of a map (eMPRT).</summary>
    [Description("efficient: the map's complexity (Quantus complexity_func): discrete-entropy (the default: entropy of the 'bins'-bin histogram of its values), entropy (Shannon entropy of the map as a distribution, a/Σa; needs abs: true) or gini (Gini coefficient of the values + 1e-7, sorted)")]
    public MprtComplexity Complexity { get; init; }
    /// <summary>Copies per call.</summary>
    [Range(1, 100_000), Description("smooth: noisy copies per call of the method (default: within the memory budget)")]
    public int? MicroBatch { get; init; }
    /// <summary>Absolute values.</summary>
    [Description("take |·| of the maps (smooth: of the noise-averaged map) before comparing them (Quantus's defaults: true for MPRT and sMPRT, false for eMPRT)")]
    public bool? Abs { get; init; }
    /// <summary>The score.</summary>
    [Description("smooth: last (the curve's last point, Quantus return_last_correlation), average (the mean over the randomised points, what return_average_correlation means; needs per_layer) or quantus-average (the mean over every point, the original's included, as Quantus 0.6 computes return_average_correlation: its check for the original's key misses it; needs per_layer)")]
    public MprtScore Score { get; init; } = MprtScore.Last;
    /// <summary>What smooth's randomised maps are compared with.</summary>
    [Description("smooth: what each randomised model's map is compared with: smoothed (the intact model's noise-averaged map, as the paper and Quantus when no a_batch is passed; the default) or given (the evaluated step's own maps, as Quantus when a_batch is passed)")]
    public MprtReference Reference { get; init; }
    /// <summary>Quantus's compute_extra_scores.</summary>
    [Description("efficient: also the model's complexity, the entropy of its softmax output, at each point, and per input the extra scores of Quantus's compute_extra_scores (mprt_delta_explanation, mprt_fraction_explanation, mprt_delta_model, mprt_fraction_model, mprt_delta_explanation_vs_models, mprt_average_complexity, mprt_correlation_model_vs_explanation_complexity; mprt_extra.json); one forward per point more")]
    public bool ExtraScores { get; init; }
    /// <summary>Quantus's reset.</summary>
    protected override ParameterRandomisation DefaultRandomisation => ParameterRandomisation.Reset;
}

/// <summary>eMPRT's complexity of a map (Quantus's complexity_func).</summary>
public enum MprtComplexity
{
    /// <summary>Entropy of the histogram of the values (Quantus <c>discrete_entropy</c>).</summary>
    DiscreteEntropy,
    /// <summary>Shannon entropy of a / Σa (Quantus <c>entropy</c>, scipy.stats.entropy); non-negative maps only.</summary>
    Entropy,
    /// <summary>Gini coefficient of the values + 1e-7, sorted ascending (Quantus <c>gini_coeffiient</c>).</summary>
    Gini,
}

/// <summary>What <c>mprt</c>'s smooth variant compares the randomised models' maps with.</summary>
public enum MprtReference
{
    /// <summary>The intact model's noise-averaged maps (Hedström et al.; Quantus SmoothMPRT without a_batch).</summary>
    Smoothed,
    /// <summary>The evaluated step's maps (Quantus SmoothMPRT with a_batch).</summary>
    Given,
}

/// <summary>What <c>mprt</c>'s smooth score reduces its curve to.</summary>
public enum MprtScore
{
    /// <summary>The last point: every module randomised.</summary>
    Last,
    /// <summary>The mean over the points after the original.</summary>
    Average,
    /// <summary>The mean over every point, the original's included: Quantus 0.6's return_average_correlation (MPRT and
    /// SmoothMPRT skip a key "orig" where they stored "original", so the original point enters the mean).</summary>
    QuantusAverage,
}
