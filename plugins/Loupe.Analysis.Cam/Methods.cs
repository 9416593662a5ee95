using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Cam;

/// <summary>Grad-CAM (Selvaraju et al. 2017): α_k = mean_ij ∂y/∂A_kij (Eq. 1), map = Σ_k α_k A_k (Eq. 2); with
/// <c>sum_channels: false</c> the per-channel terms α_k A_k (N×K×h×w, Captum's attr_dim_summation=False).</summary>
public sealed class GradCam : CamAnalysis<GradCamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "grad-cam";
    /// <inheritdoc/>
    public override IEnumerable<string> Validate(GradCamOptions options, AnalysisValidationContext context)
    {
        foreach (var e in base.Validate(options, context)) yield return e;
        if (!options.SumChannels && options.EigenSmooth) yield return "sum_channels: false keeps the channels; eigen_smooth projects them: choose one";
        if (!options.SumChannels && (options.AllLayers.Count > 1 || options.Convention == CamConvention.PytorchGradCam))
            yield return "sum_channels: false (Captum's attr_dim_summation=False) takes one layer and convention captum";
    }
    /// <inheritdoc/>
    protected override Tensor LayerMap(GradCamOptions o, CamLayer l)
    {
        var terms = WeightedActivations(o, l);
        return o.SumChannels ? terms.sum(1) : terms;
    }
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(GradCamOptions o, CamLayer l) => Weighted(l);
    /// <summary>α_k A_k with α_k the spatial mean of the gradient.</summary>
    internal static Tensor Weighted(CamLayer l) => l.Gradient!.mean([2, 3], keepdim: true) * l.Activation;
}

/// <summary>Options of <c>grad-cam</c>.</summary>
public record GradCamOptions : CamOptions
{
    /// <summary>An empty set of options.</summary>
    public GradCamOptions() { }
    /// <summary>Grad-CAM options from the shared CAM options (Guided Grad-CAM's).</summary>
    public GradCamOptions(CamOptions shared) : base(shared) { }
    /// <summary>Sum over channels.</summary>
    [System.ComponentModel.Description("sum the weighted channels (true, the paper); false keeps them: K maps per input (Captum attr_dim_summation=False)")]
    public bool SumChannels { get; init; } = true;
}

/// <summary>Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 in arxiv 1710.11063, with exponential-output closed form as
/// pytorch-grad-cam): a_kij = g² / (2g² + Σ_ab A_kab · g³), w_k = Σ_ij a_kij · relu(g_kij).</summary>
public sealed class GradCamPlusPlus : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "grad-cam-plus-plus";
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l) => Weighted(l);
    /// <summary>w_k A_k with Grad-CAM++'s weights.</summary>
    internal static Tensor Weighted(CamLayer l)
    {
        var g = l.Gradient!; var a = l.Activation;
        var g2 = g * g; var g3 = g2 * g;
        var sumA = a.sum([2, 3], keepdim: true);
        var aij = g2 / (2 * g2 + sumA * g3 + 1e-6f);
        aij = where(g != 0, aij, zeros_like(aij));
        var weights = (nn.functional.relu(g) * aij).sum([2, 3], keepdim: true);
        return weights * a;
    }
}

/// <summary>XGrad-CAM (Fu et al. 2020): w_k = Σ_ij (A_kij / Σ_ab A_kab) · ∂y/∂A_kij.</summary>
public sealed class XGradCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "xgrad-cam";
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l) => Weighted(l);
    /// <summary>w_k A_k with XGrad-CAM's weights.</summary>
    internal static Tensor Weighted(CamLayer l)
    {
        var a = l.Activation;
        var weights = (l.Gradient! * a / (a.sum([2, 3], keepdim: true) + 1e-7f)).sum([2, 3], keepdim: true);
        return weights * a;
    }
}

/// <summary>HiRes-CAM (Draelos &amp; Carin 2020): Σ_k ∂y/∂A_k ⊙ A_k, element-wise (no spatial averaging of gradients).</summary>
public sealed class HiResCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "hires-cam";
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l) => Weighted(l);
    /// <summary>∂y/∂A ⊙ A.</summary>
    internal static Tensor Weighted(CamLayer l) => l.Gradient! * l.Activation;
}

/// <summary>LayerCAM (Jiang et al. 2021, Eq. 6): Σ_k relu(∂y/∂A_k) ⊙ A_k.</summary>
public sealed class LayerCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "layer-cam";
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l) => Weighted(l);
    /// <summary>relu(∂y/∂A) ⊙ A.</summary>
    internal static Tensor Weighted(CamLayer l) => nn.functional.relu(l.Gradient!) * l.Activation;
}

/// <summary>Eigen-CAM (Muhammad &amp; Yeasin 2020): the projection of A (h·w × K, centred) on its first principal
/// direction. No gradients and no target. The SVD sign is fixed so that the map correlates positively with the mean
/// activation (pytorch-grad-cam leaves it to LAPACK).</summary>
public sealed class EigenCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "eigen-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override bool ProjectsAlready => true;
    /// <inheritdoc/>
    protected override Tensor LayerMap(CamOptions o, CamLayer l)
    {
        var a = l.Activation;
        long n = a.shape[0], k = a.shape[1], h = a.shape[2], w = a.shape[3];
        var m = a.reshape(n, k, h * w).transpose(1, 2);                         // N×hw×K
        var centred = m - m.mean([1], keepdim: true);
        var (_, _, vh) = linalg.svd(centred, fullMatrices: false);
        var proj = centred.MatMul(vh[.., 0].unsqueeze(2)).squeeze(2);           // N×hw
        var sign = (proj * a.mean([1]).reshape(n, h * w)).sum([1], keepdim: true).sign();
        sign = where(sign == 0, ones_like(sign), sign);
        return (proj * sign).view(n, h, w);
    }
}

/// <summary>Score-CAM (Wang et al. 2020, as pytorch-grad-cam): each channel, upsampled to the input and min-max scaled,
/// masks the input; w = softmax over channels of the target scores of the masked inputs. Forward passes only.</summary>
public sealed class ScoreCam : CamAnalysis<ScoreCamOptions>
{
    /// <inheritdoc/>
    protected override bool ForwardsCopies => true;
    /// <summary>Largest block of masked copies made at once (64 MiB); an image whose copies need more gets them chunk by chunk.</summary>
    const long PrecomputeBytes = 64L << 20;

    /// <inheritdoc/>
    public override string ArtifactName => "score-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(ScoreCamOptions o, CamLayer l)
    {
        var a = l.Activation; var x = l.Input;
        long n = a.shape[0], k = a.shape[1];
        // pytorch-grad-cam upsamples with UpsamplingBilinear2d, i.e. align_corners = true, under either convention:
        // Captum has no Score-CAM, so its convention (the output's scaling and resize) has no masks of its own (until
        // 2026-12-05 the captum convention masked with align_corners = false, a different layer map).
        var up = Display.Resize(a, x.shape[2], x.shape[3], alignCorners: true);  // N×K×H×W
        var flat = up.reshape(n, k, -1);
        var min = flat.amin([2]).view(n, k, 1, 1); var max = flat.amax([2]).view(n, k, 1, 1);
        var masks = (up - min) / (max - min + 1e-8f);
        var weights = nn.functional.softmax(MaskedScores(l, masks, o.MicroBatch ?? 64), 1).view(n, k, 1, 1);
        return weights * a;
    }

    /// <summary>N×K: the target's score of each input multiplied by each of its K masks. The model's passes run back to
    /// back: a libtorch operation between two ONNX Runtime runs wakes libtorch's OpenMP workers, whose spinning then
    /// took ~40 % longer per run (demo CNN, 16 runs: 120 → 78 ms); so the masked copies are made in blocks before
    /// their forwards, and a target that reads only the output scores all outputs once at the end.</summary>
    static Tensor MaskedScores(CamLayer l, Tensor masks, long chunk)
    {
        var (model, target) = (l.Context.Model, l.Context.Target);
        long n = masks.shape[0], k = masks.shape[1];
        var kept = new List<Tensor>(); // outputs (or scores) of every chunk, outside the chunks' dispose scopes
        try
        {
            bool outputOnly = target.RequiredLayers.Count == 0;
            using (no_grad())
                foreach (var (image, copies) in MaskedCopies(l.Input, masks, chunk))
                {
                    Tensor result;
                    if (outputOnly) result = model.Forward(copies);
                    else
                    {
                        var sel = l.Selection.Repeat((int)image, (int)copies.shape[0]);
                        var (_, cap, ti, _) = Explain.Forward(model, target, copies, [], false, sel);
                        using (cap) result = target.Scores(ti, sel);
                    }
                    result.DetachFromDisposeScope();
                    kept.Add(result);
                }
            if (!outputOnly) return cat(kept, 0).view(n, k);
            var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)k)).ToArray();
            var input = new TargetInput(cat(kept, 0), layer => throw new LoupeException($"target needs layer '{layer}'"));
            return target.Scores(input, l.Selection.Rows(rows)).view(n, k);
        }
        finally
        {
            foreach (var t in kept) t.Dispose();
        }
    }

    /// <summary>Image index and up to <paramref name="chunk"/> copies of it, each multiplied by one of its masks, in
    /// image then mask order. The copies of as many images as fit in <see cref="PrecomputeBytes"/> are made in one
    /// operation; a yielded tensor is valid until the enumeration moves on.</summary>
    static IEnumerable<(long Image, Tensor Copies)> MaskedCopies(Tensor x, Tensor masks, long chunk)
    {
        long n = masks.shape[0], k = masks.shape[1];
        long perImage = k * x.shape[1] * x.shape[2] * x.shape[3] * sizeof(float);
        long block = perImage <= PrecomputeBytes ? Math.Clamp(PrecomputeBytes / perImage, 1, n) : 1;
        for (long i0 = 0; i0 < n; i0 += block)
        {
            long b = Math.Min(block, n - i0);
            using var blockScope = NewDisposeScope();
            var precomputed = perImage <= PrecomputeBytes ? x.narrow(0, i0, b).unsqueeze(1) * masks.narrow(0, i0, b).unsqueeze(2) : null; // b×K×C×H×W
            for (long i = i0; i < i0 + b; i++)
                for (long c0 = 0; c0 < k; c0 += chunk)
                {
                    using var scope = NewDisposeScope();
                    long c = Math.Min(chunk, k - c0);
                    yield return (i, precomputed is null
                        ? x[i].unsqueeze(0) * masks[i].narrow(0, c0, c).unsqueeze(1)                         // c×C×H×W
                        : precomputed[i - i0].narrow(0, c0, c));
                }
        }
    }
}

/// <summary>Options of <c>score-cam</c> and <c>ablation-cam</c>.</summary>
public record ScoreCamOptions : CamOptions
{
    /// <summary>Copies per forward.</summary>
    [Range(1, 65536), Description("masked/ablated copies per forward pass (default 64)")]
    public int? MicroBatch { get; init; }
}

/// <summary>Options of <c>cam</c>.</summary>
public record ClassCamOptions : CamOptions
{
    /// <summary>The linear head after global average pooling.</summary>
    [Required, Description("the linear classifier layer after global average pooling (its weight W is classes×K), e.g. fc")]
    public string Head { get; init; } = "fc";
}

/// <summary>CAM (Zhou et al. 2016, Eq. 2): Σ_k W[c, k] A_k with W the weights of the linear head that follows global
/// average pooling of the layer. Needs a class target.</summary>
public sealed class ClassActivationMap : CamAnalysis<ClassCamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override ModelCapabilities ExtraCapabilities => ModelCapabilities.Parameters;

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ClassCamOptions options, AnalysisValidationContext context)
    {
        foreach (var e in base.Validate(options, context)) yield return e;
        var weight = ModelParameters.Read(context.Model, options.Head + ".weight");
        if (weight is null || weight.dim() != 2)
            yield return $"option 'head': '{options.Head}' has no 2-D weight; CAM needs the linear layer after global average pooling";
    }

    /// <inheritdoc/>
    protected override Tensor WeightedActivations(ClassCamOptions o, CamLayer l)
    {
        var classes = l.Selection.Classes ?? throw new LoupeException("cam needs a class target (top-1, top-k or class)");
        var weight = ModelParameters.Read(l.Context.Model, o.Head + ".weight")!;
        if (weight.shape[1] != l.Activation.shape[1])
            throw new LoupeException($"head '{o.Head}' has {weight.shape[1]} inputs but layer '{l.Layer}' has {l.Activation.shape[1]} channels");
        var wc = weight.detach().index_select(0, tensor(classes, dtype: ScalarType.Int64));         // N×K
        return wc.view(wc.shape[0], -1, 1, 1) * l.Activation;
    }
}

/// <summary>Guided Grad-CAM (Selvaraju et al. 2017, §3; Captum <c>GuidedGradCam</c>): guided backprop ⊙ the Grad-CAM map
/// upsampled to the input (nearest, Captum's default, or <c>upsample: bilinear</c>), per channel.</summary>
public sealed class GuidedGradCam : CamAnalysis<CamOptions>
{
    readonly GradCam _gradCam = new();

    /// <inheritdoc/>
    public override string ArtifactName => "guided-grad-cam";
    /// <inheritdoc/>
    protected override ModelCapabilities ExtraCapabilities => ModelCapabilities.ReluOverride;
    /// <inheritdoc/>
    protected override Tensor LayerMap(CamOptions o, CamLayer l) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override AttributionResult Attribute(CamOptions options, AttributionInput input)
    {
        var cam = _gradCam.Attribute(new GradCamOptions(options) { Convention = CamConvention.Captum, Upsample = options.Upsample ?? CamUpsample.Nearest }, input);
        var model = (IModelInterventions)input.Context.Model;
        Tensor guided;
        using (model.OverrideRelu(ReluRule.Guided))
            (guided, _) = Explain.InputGradient(input.Context, input.Input, cam.Selection, input.Slot);
        return new AttributionResult(guided * cam.Map.unsqueeze(1), cam.Selection);
    }
}

/// <summary>Registers the CAM family.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<ClassActivationMap>("cam", "class activation map from the linear head after GAP (Zhou et al. 2016)")
        .AddLoupeAnalysis<GradCam>("grad-cam", "gradient-weighted class activation map (Selvaraju et al. 2017)")
        .AddLoupeAnalysis<GradCamPlusPlus>("grad-cam-plus-plus", "Grad-CAM++ (Chattopadhay et al. 2018)")
        .AddLoupeAnalysis<XGradCam>("xgrad-cam", "XGrad-CAM (Fu et al. 2020)")
        .AddLoupeAnalysis<HiResCam>("hires-cam", "HiRes-CAM: element-wise gradient × activation (Draelos & Carin 2020)")
        .AddLoupeAnalysis<LayerCam>("layer-cam", "LayerCAM: relu(gradient) × activation (Jiang et al. 2021)")
        .AddLoupeAnalysis<ScoreCam>("score-cam", "Score-CAM: channel-masked forward passes, softmax weights (Wang et al. 2020)")
        .AddLoupeAnalysis<AblationCam>("ablation-cam", "Ablation-CAM: score drop when a channel is zeroed (Desai & Ramaswamy 2020)")
        .AddLoupeAnalysis<EigenCam>("eigen-cam", "Eigen-CAM: first principal component of the activations (Muhammad & Yeasin 2020)")
        .AddLoupeAnalysis<GuidedGradCam>("guided-grad-cam", "guided backprop × upsampled Grad-CAM (Selvaraju et al. 2017)")
        .AddLoupeAnalysis<AttentionRollout>("attention-rollout", "ViT attention rollout: head-averaged attention with the residual, multiplied over layers (Abnar & Zuidema 2020)");
}
