using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>Optimiser.</summary>
public enum OptimizerKind
{
    /// <summary>Adam (β = 0.9, 0.999), Lucid's default.</summary>
    Adam,
    /// <summary>Plain gradient ascent.</summary>
    Sgd,
}

/// <summary>A direction in a layer's channel space.</summary>
public sealed record DirectionOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description("layer whose channel space the direction lives in")]
    public string Layer { get; init; } = "";
    /// <summary>Vector file.</summary>
    [Required, FilePath, Description(".npy with one value per channel of the layer")]
    public string Vector { get; init; } = "";
    /// <summary>Similarity.</summary>
    [Description("dot (the default: ⟨v, A[:, :, y, x]⟩, Lucid's direction) or cosine (the cosine similarity of v and A[:, :, y, x], PyTorch's CosineSimilarity with eps 1e-8: Lucent's direction and direction_neuron)")]
    public DirectionSimilarity Similarity { get; init; }
    /// <summary>Positions.</summary>
    [Description("mean (the default: averaged over the layer's positions, Lucent's direction) or center (the position (h // 2, w // 2) only, Lucent's direction_neuron without x and y)")]
    public DirectionPosition Position { get; init; }
}

/// <summary>How a direction objective compares v with the activations.</summary>
public enum DirectionSimilarity
{
    /// <summary>⟨v, a⟩.</summary>
    Dot,
    /// <summary>⟨v, a⟩ / (max(‖v‖, ε) · max(‖a‖, ε)), ε = 1e-8.</summary>
    Cosine,
}

/// <summary>Where a direction objective reads the activations.</summary>
public enum DirectionPosition
{
    /// <summary>Averaged over positions.</summary>
    Mean,
    /// <summary>The centre position (h // 2, w // 2).</summary>
    Center,
}

/// <summary>Options of <c>activation-max</c>.</summary>
public sealed record ActivationMaxOptions
{
    /// <summary>One objective.</summary>
    [Description("objective expression: class:sneaker, class:3, relu3:12 (channel mean), relu3:12:3:3 (neuron), relu3:12:center (the centre neuron, Lucent's neuron default), relu3 (layer mean), weighted sums such as 'relu3:12 - 0.5 * relu3:7'; 'class:*' expands to every class")]
    public string? Objective { get; init; }
    /// <summary>Several objectives, one image each.</summary>
    [Description("several objectives optimised in one batch, one image each")]
    public string[]? Objectives { get; init; }
    /// <summary>Class shorthand.</summary>
    [Description("shorthand for objective: class:<label or index>")]
    public string? Class { get; init; }
    /// <summary>Direction objective.</summary>
    [Description("a direction objective { layer, vector: file.npy } (one more image): mean over positions of ⟨v, A[:, :, y, x]⟩")]
    public DirectionOptions? Direction { get; init; }

    /// <summary>Parameterisation.</summary>
    [Description("pixels, fft (Fourier coefficients scaled by 1/frequency, Lucid) or cppn (the weights of a compositional pattern-producing network of the pixel coordinates, Lucent's param.cppn: cppn_channels, cppn_layers, cppn_normalize; decorrelate, range and init_sd do not apply; Lucent optimises it with Adam at learning_rate 0.005)")]
    public ParameterizationKind Parameterization { get; init; } = ParameterizationKind.Fft;
    /// <summary>CPPN hidden channels.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 1024), Description("parameterization cppn: hidden channels of each layer (Lucent's num_hidden_channels: 24)")]
    public int CppnChannels { get; init; } = 24;
    /// <summary>CPPN layers.</summary>
    [System.ComponentModel.DataAnnotations.Range(2, 64), Description("parameterization cppn: 1×1 convolutions, the last producing the image (Lucent's num_layers: 8)")]
    public int CppnLayers { get; init; } = 8;
    /// <summary>CPPN instance norm.</summary>
    [Description("parameterization cppn: an instance norm after every convolution (Lucent's normalize: false)")]
    public bool CppnNormalize { get; init; }
    /// <summary>Colour decorrelation.</summary>
    [Description("mix channels with Lucid's ImageNet colour correlation matrix (3-channel inputs; identity for grey)")]
    public bool Decorrelate { get; init; } = true;
    /// <summary>Range mapping.</summary>
    [Description("how parameters become pixels in [0,1]: sigmoid, clamp (clamp(0.5 + t)), or none (0.5 + t, unbounded)")]
    public RangeMapping Range { get; init; } = RangeMapping.Sigmoid;
    /// <summary>Image size.</summary>
    [Description("[height, width] of the synthesised image (default: the model's input size)")]
    public int[]? Size { get; init; }
    /// <summary>Resize to the model.</summary>
    [Description("resize each step's transformed batch (bilinear) to the model's input size: for models with a fixed input size, or to synthesise at a lower resolution than the model sees")]
    public bool ResizeToModel { get; init; }
    /// <summary>Init noise.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 10.0), Description("standard deviation of the initial parameters (seeded normal noise; 0 = start from grey)")]
    public double InitSd { get; init; } = 0.01;

    /// <summary>Steps.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 1_000_000), Description("optimisation steps")]
    public int Steps { get; init; } = 256;
    /// <summary>Optimiser.</summary>
    [Description("adam or sgd")]
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Adam;
    /// <summary>Learning rate.</summary>
    [System.ComponentModel.DataAnnotations.Range(1e-9, 1e6), Description("learning rate")]
    public double LearningRate { get; init; } = 0.05;

    /// <summary>L2 decay.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 1e9), Description("λ of the L2 decay λ·Σ(I − l2_center)² over the image's pixels and channels (pixel space, before transforms)")]
    public double L2 { get; init; }
    /// <summary>L2 centre.</summary>
    [Description("the value the L2 decay pulls pixels toward (0.5 = mid-grey; 0 gives Simonyan's λ‖I‖²)")]
    public double L2Center { get; init; } = 0.5;
    /// <summary>Total variation.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 1e9), Description("λ of the total variation λ·Σ(|I[y+1,x] − I[y,x]| + |I[y,x+1] − I[y,x]|)")]
    public double Tv { get; init; }
    /// <summary>Blur period.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 1_000_000), Description("blur the image every n steps (0 = never; Yosinski et al. 2015)")]
    public int BlurEvery { get; init; }
    /// <summary>Blur σ.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.01, 100.0), Description("σ of that Gaussian blur, in pixels")]
    public double BlurSigma { get; init; } = 0.5;
    /// <summary>Pixel-norm clipping.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 100.0), Description("after each step, set pixels whose norm ‖I − 0.5‖ (over channels) is below this percentile to grey (pixels parameterisation)")]
    public double NormClip { get; init; }
    /// <summary>Contribution clipping.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 100.0), Description("after each step, set pixels whose contribution |Σ_c (I − 0.5)·∂S/∂I| is below this percentile to grey (pixels parameterisation)")]
    public double ContributionClip { get; init; }
    /// <summary>Jitter.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 10_000), Description("random shift of up to ±n pixels each step (torch.roll)")]
    public int Jitter { get; init; }
    /// <summary>Scales.</summary>
    [Description("random zoom factor per step, chosen from this list (e.g. [0.95, 1, 1.05])")]
    public double[]? Scales { get; init; }
    /// <summary>Rotations.</summary>
    [Description("random rotation per step in degrees, chosen from this list (e.g. [-5, 0, 5])")]
    public double[]? Rotations { get; init; }
    /// <summary>Padding.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 10_000), Description("pad the image by n pixels of grey (0.5) before the other transforms (Lucid pads 12)")]
    public int Pad { get; init; }
    /// <summary>Second jitter.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 10_000), Description("a second jitter of n pixels after scale and rotation (Lucent's standard_transforms end with jitter(4))")]
    public int JitterAfter { get; init; }
    /// <summary>How the transforms act.</summary>
    [Description("loupe (the default: the image keeps its size — jitter rolls by ±n, scale zooms about the centre, borders replicated) or lucent (Lucent's transforms: jitter crops (H − n) × (W − n) at an offset in [0, n), scale resizes to ⌈s·H⌉ (align_corners, zero padding when smaller), rotation fills with zeros (kornia's rotate) — the model sees images of varying size; Lucent's standard_transforms: pad 12, jitter 8, scales 0.9…1.1 by 0.02, rotations −10…10 and five more 0, jitter_after 4)")]
    public TransformStyle Transforms { get; init; }
    /// <summary>Images per objective.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 64), Description("images per objective (Lucent's param batch), each from its own start noise; with 'diversity' they are pushed apart")]
    public int Batch { get; init; } = 1;
    /// <summary>Diversity weight.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 1e9), Description("λ of Lucid's diversity term (Olah et al. 2017; Lucent's '- λ * diversity(layer)'): λ·Σ_{i≠j} ⟨Ĝ_i, Ĝ_j⟩ / B is subtracted from the objective of each objective's B = batch images, Ĝ the Frobenius-normalised Gram matrix of diversity_layer's channels")]
    public double Diversity { get; init; }
    /// <summary>Diversity layer.</summary>
    [LayerName, Description("layer whose channel Gram matrices the diversity term compares (needs diversity > 0 and batch ≥ 2)")]
    public string? DiversityLayer { get; init; }
    /// <summary>Alignment weight.</summary>
    [System.ComponentModel.DataAnnotations.Range(0.0, 1e9), Description("λ of Lucid's alignment term (Lucent's '+ λ * alignment(layer)' in its loss): λ·Σ_{d=1..4} Σ_i mean((A_i − A_{i+d})²) / alignment_decay^d over the images in order, at alignment_layer — neighbouring images (an interpolation between objectives) keep the same layout")]
    public double Alignment { get; init; }
    /// <summary>Alignment layer.</summary>
    [LayerName, Description("layer at which the alignment term compares neighbouring images (needs alignment > 0 and two or more images)")]
    public string? AlignmentLayer { get; init; }
    /// <summary>Alignment decay.</summary>
    [System.ComponentModel.DataAnnotations.Range(1e-3, 1e3), Description("how much the alignment penalty decays per place between two images (Lucent's decay_ratio)")]
    public double AlignmentDecay { get; init; } = 2;
    /// <summary>Snapshot steps.</summary>
    [Description("steps after which the images are also kept (Lucent's render_vis thresholds), e.g. [16, 64]: <id>.image-step<k>.npy/.png per image and a progress.png sheet of every image at each of them and at the end")]
    public int[]? Snapshots { get; init; }
    /// <summary>Display size.</summary>
    [System.ComponentModel.DataAnnotations.Range(16, 4096), Description("display PNGs are upscaled (nearest) to at least this width")]
    public int DisplaySize { get; init; } = 112;
}

/// <summary>The result of an optimisation.</summary>
/// <param name="Images">N×C×H×W in [0,1] pixel space (unbounded with range none): <c>batch</c> images per objective, objective by objective.</param>
/// <param name="History">Objective values per step (steps × N), measured on the transformed batch of that step.</param>
/// <param name="Start">Objective values of the start image (untransformed).</param>
/// <param name="Final">Objective values of the final image (untransformed).</param>
/// <param name="Similarity">With <c>batch</c> ≥ 2 and <c>diversity</c>: per objective, Lucid's diversity term of its final
/// images (<see cref="Synthesizer.GramSimilarity"/>: the mean pairwise similarity of their Gram matrices), else null.</param>
/// <param name="Misalignment">With an <c>alignment_layer</c> and two or more images: Lucid's alignment term of the final
/// images (<see cref="Synthesizer.Misalignment"/>, at the step's <c>alignment_decay</c>), else null.</param>
/// <param name="Snapshots">The images after each step of <c>snapshots</c> (in [0,1] pixel space), in step order.</param>
public sealed record SynthesisResult(Tensor Images, float[,] History, float[] Start, float[] Final, float[]? Similarity = null, float? Misalignment = null,
    IReadOnlyList<(int Step, Tensor Images)>? Snapshots = null);

/// <summary>How activation-max's random transforms act.</summary>
public enum TransformStyle
{
    /// <summary>Same-size transforms: roll, zoom about the centre (replicated borders), rotation.</summary>
    Loupe,
    /// <summary>Lucent's: crop jitter, size-changing scale, zero-filled rotation.</summary>
    Lucent,
}
