using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>Which activation vector an input contributes to the atlas.</summary>
public enum AtlasPosition
{
    /// <summary>The vector at one spatial position, chosen from the input id (Carter et al. 2019).</summary>
    Random,
    /// <summary>The vector averaged over all positions.</summary>
    Mean,
}

/// <summary>Options of <c>activation-atlas</c>.</summary>
public sealed record ActivationAtlasOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description("layer whose activation vectors are mapped (N×C×H×W, or N×C)")]
    public string Layer { get; init; } = "";
    /// <summary>Position.</summary>
    [Description("random: one vector per input at a position chosen from the input id (Carter et al.); mean: the average over positions")]
    public AtlasPosition Position { get; init; } = AtlasPosition.Random;
    /// <summary>Sample size.</summary>
    [Range(2, 1_000_000), Description("at most this many inputs (one vector each): those with the smallest hash of (sample_seed, input id), a uniform sample whatever the batch size or data order")]
    public int Max { get; init; } = 2000;
    /// <summary>Sample seed.</summary>
    [Description("seed of the sample and of the positions, with each input id (not the run seed: every step and run on the same data reads the same vectors)")]
    public int SampleSeed { get; init; }

    /// <summary>Perplexity.</summary>
    [Range(1.0, 10000.0), Description("t-SNE perplexity (below the number of vectors)")]
    public double Perplexity { get; init; } = 30;
    /// <summary>t-SNE iterations.</summary>
    [Range(250, 100000), Description("t-SNE iterations (the first 250 with early exaggeration)")]
    public int TsneIterations { get; init; } = 1000;
    /// <summary>Grid size.</summary>
    [Range(1, 200), Description("cells per side of the grid laid over the layout")]
    public int Grid { get; init; } = 20;
    /// <summary>Minimum count.</summary>
    [Range(1, 1_000_000), Description("cells with fewer vectors are left empty")]
    public int MinCount { get; init; } = 3;

    /// <summary>Steps.</summary>
    [Range(0, 100000), Description("activation-maximisation steps per icon (0: no icons, cells drawn by their count)")]
    public int Steps { get; init; } = 64;
    /// <summary>Learning rate.</summary>
    [Range(1e-9, 1e6), Description("Adam learning rate of the icons")]
    public double LearningRate { get; init; } = 0.05;
    /// <summary>Cosine power.</summary>
    [Range(0.0, 100.0), Description("p of the icon objective ⟨a, v⟩ · max(cos(a, v), 0.1)^p (Lucid's cossim_pow; 0: the dot product alone)")]
    public double CossimPower { get; init; } = 4;
    /// <summary>Parameterisation.</summary>
    [Description("pixels, fft (Fourier coefficients scaled by 1/frequency, Lucid) or cppn (Lucent's param.cppn with its defaults: 24 hidden channels, 8 layers)")]
    public ParameterizationKind Parameterization { get; init; } = ParameterizationKind.Fft;
    /// <summary>Colour decorrelation.</summary>
    [Description("mix channels with Lucid's ImageNet colour correlation matrix (3-channel inputs; identity for grey)")]
    public bool Decorrelate { get; init; } = true;
    /// <summary>Icon size.</summary>
    [Description("[height, width] of the optimised icons (default: the model's input size)")]
    public int[]? Size { get; init; }
    /// <summary>Resize to the model.</summary>
    [Description("resize each step's icons (bilinear) to the model's input size: for models with a fixed input size")]
    public bool ResizeToModel { get; init; }
    /// <summary>Jitter.</summary>
    [Range(0, 10_000), Description("random shift of up to ±n pixels each step")]
    public int Jitter { get; init; } = 2;
    /// <summary>Scales.</summary>
    [Description("random zoom factor per step, chosen from this list (e.g. [0.95, 1, 1.05])")]
    public double[]? Scales { get; init; }
    /// <summary>Rotations.</summary>
    [Description("random rotation per step in degrees, chosen from this list (e.g. [-5, 0, 5])")]
    public double[]? Rotations { get; init; }
    /// <summary>Padding.</summary>
    [Range(0, 10_000), Description("pad the icons by n pixels of grey before the other transforms")]
    public int Pad { get; init; }
    /// <summary>Icons per batch.</summary>
    [Range(1, 100_000), Description("icons optimised together (default: as many as settings.memory_budget_mb holds)")]
    public int? IconBatch { get; init; }
    /// <summary>Display size.</summary>
    [Range(8, 1024), Description("size in pixels of each icon in the figures (bilinear resize)")]
    public int IconSize { get; init; } = 64;
}

/// <summary>One cell of an atlas grid.</summary>
/// <param name="Row">Grid row, 0 at the top (largest layout y).</param>
/// <param name="Column">Grid column, 0 at the left (smallest layout x).</param>
/// <param name="Members">Indices of the vectors in the cell, ascending.</param>
/// <param name="Mean">Their mean activation vector (float64).</param>
public sealed record AtlasCell(int Row, int Column, int[] Members, double[] Mean);
