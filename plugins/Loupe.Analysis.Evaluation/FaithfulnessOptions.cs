using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Whose definition <c>irof</c>, <c>sensitivity-n</c>, <c>pixel-flipping</c>, <c>selectivity</c> and
/// <c>region-perturbation</c> report.</summary>
public enum ScoreConvention
{
    /// <summary>The paper's (irof: Rieger &amp; Hansen's area over the curve on [0, 1], p_0 = 1 included;
    /// sensitivity-n: Ancona et al.'s random subsets per input).</summary>
    Paper,
    /// <summary>Quantus's (irof: M − Σ trapezoid(p_1 … p_M, dx = 1); sensitivity-n: per step of the attribution order,
    /// the correlation across the inputs).</summary>
    Quantus,
}

/// <summary>Options of the faithfulness metrics (defaults: Quantus's per metric unless set).</summary>
public sealed record FaithfulnessOptions : PerturbOptions
{
    /// <summary>Features per step.</summary>
    [Range(1, int.MaxValue), Description("pixels perturbed per step, in rank order (Quantus features_in_step: 1)")]
    public int FeaturesInStep { get; init; } = 1;
    /// <summary>Runs.</summary>
    [Range(1, 100_000), Description("faithfulness-correlation: random subsets per input (Quantus nr_runs: 100; at least 2); sensitivity-n: random subsets per size (at least 2); monotonicity-correlation: samples per step (Quantus nr_samples: 100)")]
    public int Runs { get; init; } = 100;
    /// <summary>Monotonicity-correlation's threshold.</summary>
    [Range(0.0, 1e6), Description("monotonicity-correlation: a step's variance is divided by f(x)² only where |f(x)| ≥ eps (Quantus eps: 1e-5)")]
    public double Eps { get; init; } = 1e-5;
    /// <summary>Subset size.</summary>
    [Range(1, int.MaxValue), Description("faithfulness-correlation: pixels per random subset (Quantus subset_size: 224)")]
    public int SubsetSize { get; init; } = 224;
    /// <summary>Patch.</summary>
    [Range(1, 4096), Description("region-perturbation and selectivity: side of the square regions (Quantus patch_size: 8)")]
    public int Patch { get; init; } = 8;
    /// <summary>Regions.</summary>
    [Range(1, int.MaxValue), Description("region-perturbation: regions perturbed (Quantus regions_evaluation: 100; capped at the number of regions)")]
    public int Regions { get; init; } = 100;
    /// <summary>Where the regions lie.</summary>
    [Description("region-perturbation and selectivity: grid (Quantus 0.6: patch x patch blocks of the image padded evenly to multiples of the patch, ranked by their attribution sum) or sliding (Quantus 0.5: a patch at every pixel, ranked by its attribution sum, each taken in that order unless it overlaps one taken before)")]
    public RegionWindows Windows { get; init; } = RegionWindows.Grid;
    /// <summary>Subset sizes.</summary>
    [Description("sensitivity-n: subset sizes n as fractions of the pixels (Ancona et al. sweep n up to 80%)")]
    public double[] Fractions { get; init; } = [0.01, 0.05, 0.1, 0.2, 0.4, 0.8];
    /// <summary>Sensitivity-n's share of the features (Quantus).</summary>
    [Range(0.0, 1.0), Description("sensitivity-n with score: quantus: the steps scored cover this share of the H×W pixels, ⌊max_fraction·H·W / features_in_step⌋ steps (Quantus n_max_percentage: 0.8)")]
    public double MaxFraction { get; init; } = 0.8;
    /// <summary>Quantus's batch.</summary>
    [Range(1, int.MaxValue), Description("sensitivity-n with score: quantus: correlate only the run's first n inputs, as Quantus scores only the first batch it is given (its batch_size, 64 by default; at least 2); default: every input of the run. irof: Quantus's batch effects over batches of this many consecutive inputs (give a batch_size, the step's or settings', that is a multiple of it): the min (black), max (white), mean and running-mean baselines are taken over the whole batch's array, and with score: quantus each curve is padded with zeros to the batch's largest segment count; default: none (each input alone). road: score only the run's first n inputs (the others are left out of every mean), as Quantus 0.6's ROAD returns the accuracies of the first batch it is given (its batch_size, 64 by default); default: every input")]
    public int? QuantusBatchSize { get; init; }
    /// <summary>Order.</summary>
    [Description("region-perturbation and road: morf (most relevant first; higher is better for region-perturbation's AOPC, lower for road's accuracy) or lerf (least relevant first; the reverse); region-perturbation also random (the grid's regions in a random order seeded per input, Quantus's reference curve)")]
    public RegionOrder Order { get; init; } = RegionOrder.Morf;
    /// <summary>Segmentation.</summary>
    [Description("irof: how the image is cut into segments (Quantus segmentation_method): slic (the default: scikit-image's SLIC, 'segments' and 'compactness') or felzenszwalb (scikit-image's felzenszwalb with its defaults, scale 1, sigma 0.8, min_size 20, as Quantus calls it)")]
    public Segmentation Segmentation { get; init; }
    /// <summary>Superpixels.</summary>
    [Range(2, 100_000), Description("irof: approximate number of SLIC superpixels (skimage's default, which Quantus uses: 100)")]
    public int Segments { get; init; } = 100;
    /// <summary>SLIC compactness.</summary>
    [Range(0.01, 1000.0), Description("irof: SLIC compactness (skimage default: 10)")]
    public double Compactness { get; init; } = 10;
    /// <summary>IROF's score.</summary>
    [Description("irof: paper (the default: 1 − the area under p_0 = 1, p_1 … p_M on [0, 1], comparable across segment counts) or quantus (Quantus's M − Σ trapezoid of p_1 … p_M with dx = 1, as Quantus gives it for a batch of one input or of equal segment counts); sensitivity-n: paper (the default: Ancona et al.'s random subsets of each size, correlated per input) or quantus (Quantus's SensitivityN: features removed cumulatively in attribution order, features_in_step at a time; per step, the correlation across the run's inputs of the output drop and the step's attribution sum; the score is the mean over the steps; softmax by default; no shards); pixel-flipping and selectivity: paper (the default: the curve's trapezoid area over its steps, in the curve's range) or quantus (numpy's trapz with dx = 1, as Quantus's PixelFlipping return_auc_per_sample and Selectivity get_auc_score: the same × (steps − 1)); region-perturbation: paper (the default: AOPC, the mean drop over k = 0..L) or quantus (Quantus's get_auc_score: numpy's trapz with dx = 1 of the drops f(x) − f(x_k), k = 1..L); no other metric takes it")]
    public ScoreConvention Score { get; init; }
    /// <summary>Grid instead of SLIC.</summary>
    [Range(1, 4096), Description("irof: square cells of this side instead of SLIC superpixels")]
    public int? Cell { get; init; }
    /// <summary>ROAD percentages.</summary>
    [Description("road: percentages of the pixels imputed, one curve point each (Quantus: 1, 3, ..., 99)")]
    public double[] Percentages { get; init; } = Enumerable.Range(0, 50).Select(i => 1.0 + 2 * i).ToArray();
    /// <summary>ROAD noise.</summary>
    [Range(0.0, 1000.0), Description("road: σ of the Gaussian noise added to imputed values, normalised units, seeded per input (Quantus: 0.01)")]
    public double Noise { get; init; } = 0.01;
    /// <summary>What a feature is.</summary>
    [Description("pixel-flipping, faithfulness-estimate, faithfulness-correlation, monotonicity, monotonicity-correlation and sensitivity-n: pixels (the default: a pixel with all its channels, ranked by the channel-summed map) or values (Quantus 0.6 on several channels: every channel value is a feature — a per-channel map is used per channel, an H×W map is copied to every channel — so features_in_step, subset_size and the curves count channel values; ties among a pixel's copies in channel order, where Quantus's unstable sort leaves them to numpy)")]
    public FeatureUnit Features { get; init; }
    /// <summary>The correlation.</summary>
    [Description("faithfulness-correlation, faithfulness-estimate and sensitivity-n (default pearson), monotonicity-correlation (default spearman): pearson, spearman or kendall (τ-b) — Quantus's similarity_func")]
    public Similarity? Similarity { get; init; }
}

/// <summary>The features of the pixel-ranking metrics.</summary>
public enum FeatureUnit
{
    /// <summary>A pixel with all its channels.</summary>
    Pixels,
    /// <summary>A single channel value (Quantus 0.6 on inputs with several channels).</summary>
    Values,
}

/// <summary>Where <c>region-perturbation</c> and <c>selectivity</c> find their regions.</summary>
public enum RegionWindows
{
    /// <summary>Quantus 0.6's: fixed blocks of the evenly padded image.</summary>
    Grid,
    /// <summary>Quantus 0.5's: a window at every pixel, taken greedily in rank order unless it overlaps one taken before.</summary>
    Sliding,
}

/// <summary>How <c>irof</c> segments the image (Quantus's segmentation_method).</summary>
public enum Segmentation
{
    /// <summary>scikit-image's SLIC superpixels.</summary>
    Slic,
    /// <summary>scikit-image's felzenszwalb (Felzenszwalb &amp; Huttenlocher 2004) with its defaults.</summary>
    Felzenszwalb,
}

/// <summary>Perturbation order of <c>region-perturbation</c>.</summary>
public enum RegionOrder
{
    /// <summary>Most relevant first.</summary>
    Morf,
    /// <summary>Least relevant first.</summary>
    Lerf,
    /// <summary>region-perturbation: a random order of the grid's regions, seeded per input (Quantus order "random").</summary>
    Random,
}
