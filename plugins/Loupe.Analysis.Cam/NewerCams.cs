using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Cam;

/// <summary>Grad-CAM element-wise (pytorch-grad-cam <c>GradCAMElementWise</c>): Σ_k relu(∂y/∂A_k ⊙ A_k).</summary>
public sealed class GradCamElementWise : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "grad-cam-element-wise";
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l) => Weighted(l);
    /// <summary>relu(∂y/∂A ⊙ A).</summary>
    internal static Tensor Weighted(CamLayer l) => nn.functional.relu(l.Gradient! * l.Activation);
}

/// <summary>Eigen-Grad-CAM (pytorch-grad-cam <c>EigenGradCAM</c>): the projection of ∂y/∂A ⊙ A (h·w × K, centred) on
/// its first principal direction; the sign is fixed as <c>eigen-cam</c>'s (positive correlation with the channel mean of
/// ∂y/∂A ⊙ A), where pytorch-grad-cam leaves it to LAPACK.</summary>
public sealed class EigenGradCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "eigen-grad-cam";
    /// <inheritdoc/>
    protected override bool ProjectsAlready => true;
    /// <inheritdoc/>
    protected override Tensor LayerMap(CamOptions o, CamLayer l) => Projections.FirstComponent(l.Gradient! * l.Activation);
}

/// <summary>Seg-Eigen-CAM (Chung &amp; Ying 2025; pytorch-grad-cam <c>SegEigenCAM</c>): the projection of |∂y/∂A| ⊙ A
/// (h·w × K, centred) on its first principal direction, flipped when its most negative value is larger in magnitude than
/// its most positive one (the paper's sign correction, which pytorch-grad-cam applies; <c>eigen-grad-cam</c> fixes the
/// sign by the channel mean instead, and weights by the signed gradient). For segmentation models (with a
/// <c>region</c> target), as for classifiers.</summary>
public sealed class SegEigenCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "seg-eigen-cam";
    /// <inheritdoc/>
    protected override bool ProjectsAlready => true;
    /// <inheritdoc/>
    protected override Tensor LayerMap(CamOptions o, CamLayer l) => Projections.FirstComponent(l.Gradient!.abs() * l.Activation, signByExtremes: true);
}

/// <summary>Kernel of <c>kpca-cam</c> (sklearn <c>KernelPCA</c>'s, coef0 = 1, degree 3).</summary>
public enum KpcaKernel
{
    /// <summary>tanh(γ xᵀy + 1) (pytorch-grad-cam's default).</summary>
    Sigmoid,
    /// <summary>exp(−γ ‖x − y‖²).</summary>
    Rbf,
    /// <summary>(γ xᵀy + 1)³.</summary>
    Poly,
    /// <summary>xᵀy (plain PCA).</summary>
    Linear,
    /// <summary>xᵀy / (‖x‖ ‖y‖).</summary>
    Cosine,
}

/// <summary>Options of <c>kpca-cam</c>.</summary>
public sealed record KpcaCamOptions : CamOptions
{
    /// <summary>Kernel.</summary>
    [Description("kernel of the kernel PCA: sigmoid (pytorch-grad-cam's default), rbf, poly, linear or cosine (sklearn's definitions, coef0 1, degree 3)")]
    public KpcaKernel Kernel { get; init; } = KpcaKernel.Sigmoid;
    /// <summary>γ.</summary>
    [Range(1e-12, 1e12), Description("kernel γ (default 1/K, K = channels: sklearn's default)")]
    public double? Gamma { get; init; }
}

/// <summary>KPCA-CAM (Karmani et al. 2024; pytorch-grad-cam <c>KPCA_CAM</c>): the first kernel principal component of
/// the activations (h·w points of K channels, centred), as sklearn's <c>KernelPCA(n_components=1).fit_transform</c>:
/// the top eigenvector of the double-centred kernel matrix × √eigenvalue, its largest-magnitude entry positive
/// (sklearn's <c>svd_flip</c>). No gradients and no target.</summary>
public sealed class KpcaCam : CamAnalysis<KpcaCamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "kpca-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override bool ProjectsAlready => true;

    /// <inheritdoc/>
    protected override Tensor LayerMap(KpcaCamOptions o, CamLayer l)
    {
        var a = l.Activation.to(ScalarType.Float64);
        long n = a.shape[0], k = a.shape[1], h = a.shape[2], w = a.shape[3];
        var x = a.reshape(n, k, h * w).transpose(1, 2);
        x = x - x.mean([1], keepdim: true);                                         // N×hw×K
        double gamma = o.Gamma ?? 1.0 / k;
        var dot = x.MatMul(x.transpose(1, 2));
        var norms = x.square().sum([2], keepdim: true);
        var kernel = o.Kernel switch
        {
            KpcaKernel.Sigmoid => (dot * gamma + 1).tanh(),
            KpcaKernel.Rbf => (-(norms + norms.transpose(1, 2) - 2 * dot).clamp_min(0) * gamma).exp(),
            KpcaKernel.Poly => (dot * gamma + 1).pow(3),
            KpcaKernel.Linear => dot,
            _ => dot / (norms.sqrt() * norms.sqrt().transpose(1, 2)).clamp_min(1e-300),
        };
        var centred = kernel - kernel.mean([1], keepdim: true) - kernel.mean([2], keepdim: true) + kernel.mean([1, 2], keepdim: true);
        var (values, vectors) = linalg.eigh(centred);
        var v = vectors[.., .., -1];                                                // N×hw, top eigenvalue last
        var lambda = values[.., -1].clamp_min(0).sqrt().unsqueeze(1);
        var sign = v.gather(1, v.abs().argmax(1, keepdim: true)).sign();
        sign = where(sign == 0, ones_like(sign), sign);
        return (v * sign * lambda).to(ScalarType.Float32).view(n, h, w);
    }
}

/// <summary>The CAM whose channel weighting Finer-CAM uses (pytorch-grad-cam's base_method).</summary>
public enum FinerBase
{
    /// <summary>GradCAM (the default).</summary>
    GradCam,
    /// <summary>GradCAMPlusPlus.</summary>
    GradCamPlusPlus,
    /// <summary>XGradCAM.</summary>
    XgradCam,
    /// <summary>HiResCAM.</summary>
    HiresCam,
    /// <summary>LayerCAM.</summary>
    LayerCam,
    /// <summary>GradCAMElementWise.</summary>
    GradCamElementWise,
}

/// <summary>Options of <c>finer-cam</c>.</summary>
public sealed record FinerCamOptions : CamOptions
{
    /// <summary>pytorch-grad-cam's base_method.</summary>
    [Description("the CAM that weighs the channels with the comparison score's gradient (pytorch-grad-cam's base_method): grad-cam (default), grad-cam-plus-plus, xgrad-cam, hires-cam, layer-cam, grad-cam-element-wise")]
    public FinerBase Base { get; init; } = FinerBase.GradCam;
    /// <summary>α.</summary>
    [Range(0.0, 100.0), Description("comparison strength α of the reference classes (pytorch-grad-cam's default 1)")]
    public double Alpha { get; init; } = 1;
    /// <summary>Reference classes.</summary>
    [Description("ranks of the reference classes among all classes sorted by |logit − target logit| (rank 0 is the target itself; pytorch-grad-cam's default [1, 2, 3])")]
    public int[] Compare { get; init; } = [1, 2, 3];
}

/// <summary>Finer-CAM (Zhang et al. 2025; pytorch-grad-cam <c>FinerCAM</c> over <c>GradCAM</c>): Grad-CAM of the
/// score Σᵢ pᵢ (y_c − α y_i) / (Σᵢ pᵢ + 1e-9) over the reference classes i (the classes whose logits are closest to the
/// target's, at ranks <c>compare</c>), p = softmax of the logits (differentiated too, as pytorch-grad-cam's
/// <c>FinerWeightedTarget</c>). Runs one extra forward with gradients for that score.</summary>
public sealed class FinerCam : CamAnalysis<FinerCamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "finer-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override ModelCapabilities ExtraCapabilities => ModelCapabilities.Gradients;

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FinerCamOptions options, AnalysisValidationContext context) =>
        base.Validate(options, context).Concat(options.Compare is { Length: > 0 } c && c.All(r => r >= 1) ? [] : ["compare must list ranks ≥ 1 (rank 0 is the target class)"]);

    /// <inheritdoc/>
    protected override Tensor WeightedActivations(FinerCamOptions o, CamLayer l)
    {
        var ctx = l.Context;
        if (l.Selection.Classes is not { } classes) throw new LoupeException("finer-cam compares class logits: use a class target (top-1, top-k or class)");
        using var capture = o.AttributeToLayerInput ? LayerInputs.Of(ctx.Model, ArtifactName).CaptureInputs([l.Layer], forGradients: true) : ctx.Model.Capture([l.Layer], forGradients: true);
        var logits = ctx.Model.Forward(l.Input);
        if (o.Compare.Max() >= logits.shape[1]) throw new LoupeException($"compare rank {o.Compare.Max()} needs more than the model's {logits.shape[1]} classes");
        var main = tensor(classes);
        var score = FinerScore.Of(logits, main, FinerScore.Compared(logits, main, o.Compare), o.Alpha);
        var a = capture[l.Layer];
        var g = LayerReshapes.ToGrid(CheckedOps.Grad([score.sum()], [a])[0], l.Reshape, l.Layout);
        var scored = l with { Gradient = g };
        return o.Base switch
        {
            FinerBase.GradCamPlusPlus => GradCamPlusPlus.Weighted(scored),
            FinerBase.XgradCam => XGradCam.Weighted(scored),
            FinerBase.HiresCam => HiResCam.Weighted(scored),
            FinerBase.LayerCam => LayerCam.Weighted(scored),
            FinerBase.GradCamElementWise => GradCamElementWise.Weighted(scored),
            _ => GradCam.Weighted(scored),
        };
    }
}

/// <summary>The score ShapleyCAM differentiates.</summary>
public enum ShapleyScore
{
    /// <summary>The step's target (its class and mode: logit, softmax, ...).</summary>
    Target,
    /// <summary>ReST (Cai et al. 2025; pytorch-grad-cam's <c>ClassifierOutputReST</c>): z_c − CE(z, c) = z_c + log softmax(z)_c.</summary>
    Rest,
}

/// <summary>Options of <c>shapley-cam</c>.</summary>
public sealed record ShapleyCamOptions : CamOptions
{
    /// <summary>Score.</summary>
    [Description("score to explain: target (the step's target as configured, e.g. mode: logit or softmax) or rest (the paper's ReST: logit + log-softmax of the target class, pytorch-grad-cam's ClassifierOutputReST)")]
    public ShapleyScore Score { get; init; } = ShapleyScore.Target;
}

/// <summary>ShapleyCAM (Cai et al. 2025; pytorch-grad-cam <c>ShapleyCAM</c>): channel weights mean_ij(∂y/∂A − ½ H·A), H the
/// Hessian of the score w.r.t. the layer (a Hessian-vector product with the activations, by double backward), then
/// Σ_k w_k A_k. For a score piecewise linear in the layer (a logit after ReLUs and max pools) H·A is 0 and the map is
/// Grad-CAM's; a softmax or ReST score makes it differ.</summary>
public sealed class ShapleyCam : CamAnalysis<ShapleyCamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "shapley-cam";
    /// <inheritdoc/>
    protected override bool UsesHessian => true;

    /// <inheritdoc/>
    protected override Tensor Score(ShapleyCamOptions o, TargetInput output, TargetSelection selection, IAnalysisContext context)
    {
        if (o.Score == ShapleyScore.Target) return base.Score(o, output, selection, context);
        if (selection.Classes is not { } classes) throw new LoupeException("shapley-cam: score rest needs a class target (top-1, top-k or class)");
        var z = output.Output;
        if (z.dim() != 2) throw new LoupeException($"shapley-cam: score rest needs N×classes logits, the model gives {string.Join("×", z.shape)}");
        var c = tensor(classes).unsqueeze(1);
        return (z.gather(1, c) + nn.functional.log_softmax(z, 1).gather(1, c)).squeeze(1);
    }

    /// <inheritdoc/>
    protected override Tensor WeightedActivations(ShapleyCamOptions o, CamLayer l) =>
        (l.Gradient! - 0.5 * l.HessianTimesActivation!).mean([2, 3], keepdim: true) * l.Activation;
}

/// <summary>Options of <c>fem</c>.</summary>
public sealed record FemOptions : CamOptions
{
    /// <summary>k of the k-sigma rule.</summary>
    [Range(0.0, 1000.0), Description("k of the k-sigma rule: a channel's value counts where it exceeds its spatial mean + k · its spatial standard deviation (population σ, numpy's default; pytorch-grad-cam's k: 2)")]
    public double K { get; init; } = 2;
}

/// <summary>FEM, the Feature Explanation Method (Fuad et al. 2020; pytorch-grad-cam <c>FEM</c>): each channel is weighted
/// by the share of its positions above its spatial mean + k·σ (σ the population standard deviation), and the map is
/// Σ_k w_k·A_k. No gradients and no target; pytorch-grad-cam's FEM returns that sum whatever eigen_smooth says, and so
/// does this one.</summary>
public sealed class Fem : CamAnalysis<FemOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "fem";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override bool ProjectsAlready => true;
    /// <inheritdoc/>
    protected override Tensor LayerMap(FemOptions o, CamLayer l)
    {
        using var scope = NewDisposeScope();
        var a = l.Activation;
        var mean = a.mean([2, 3], keepdim: true);
        var std = a.std([2, 3], unbiased: false, keepdim: true);
        var weights = (a > mean + o.K * std).to(a.dtype).mean([2, 3], keepdim: true);
        return scope.MoveToOuter((weights * a).sum(1));
    }
}

/// <summary>Random-CAM (pytorch-grad-cam <c>RandomCAM</c>): channel weights drawn from U(−1, 1), seeded per input id
/// (per row where the rows come from no single input): a baseline any method should beat.</summary>
public sealed class RandomCam : CamAnalysis<CamOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "random-cam";
    /// <inheritdoc/>
    protected override bool UsesGradients => false;
    /// <inheritdoc/>
    protected override Tensor WeightedActivations(CamOptions o, CamLayer l)
    {
        using var scope = NewDisposeScope();
        long n = l.Activation.shape[0], k = l.Activation.shape[1];
        var ids = l.Ids ?? Enumerable.Range(0, (int)n).Select(i => $"#{i}").ToArray();
        var generators = InputSeeds.Generators(l.Context.Seed, ids)!;
        try
        {
            var weights = InputSeeds.Rand(generators, [1, k]).squeeze(0) * 2 - 1;   // N×k
            return scope.MoveToOuter(weights.to(l.Activation.dtype).view(n, k, 1, 1) * l.Activation);
        }
        finally { foreach (var g in generators) g.Dispose(); }
    }
}

/// <summary>Projections of a layer's maps on their principal direction.</summary>
public static class Projections
{
    /// <summary>First principal component of M (N×K×h×w as h·w points of K values, centred), N×h×w, signed so that it
    /// correlates positively with the channel mean of M — or, with <paramref name="signByExtremes"/>, so that its largest
    /// magnitude is positive (flipped when |min| &gt; |max|: Seg-Eigen-CAM's sign correction).</summary>
    public static Tensor FirstComponent(Tensor m, bool signByExtremes = false)
    {
        long n = m.shape[0], k = m.shape[1], h = m.shape[2], w = m.shape[3];
        var points = m.reshape(n, k, h * w).transpose(1, 2);
        var centred = points - points.mean([1], keepdim: true);
        var (_, _, vh) = linalg.svd(centred, fullMatrices: false);
        var proj = centred.MatMul(vh[.., 0].unsqueeze(2)).squeeze(2);
        var sign = signByExtremes
            ? where(proj.amin([1], keepdim: true).abs() > proj.amax([1], keepdim: true).abs(), full_like(proj[.., ..1], -1), ones_like(proj[.., ..1]))
            : (proj * m.mean([1]).reshape(n, h * w)).sum([1], keepdim: true).sign();
        return (proj * where(sign == 0, ones_like(sign), sign)).view(n, h, w);
    }
}

/// <summary>Registers the newer CAMs (issue 20) beside the CAM family's own registrar.</summary>
public sealed class NewerCamRegistrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<GradCamElementWise>("grad-cam-element-wise", "Grad-CAM with element-wise relu(gradient × activation) (pytorch-grad-cam GradCAMElementWise)")
        .AddLoupeAnalysis<EigenGradCam>("eigen-grad-cam", "first principal component of gradient × activation (pytorch-grad-cam EigenGradCAM)")
        .AddLoupeAnalysis<SegEigenCam>("seg-eigen-cam", "first principal component of |gradient| × activation, its larger extreme positive (Chung & Ying 2025; pytorch-grad-cam SegEigenCAM)")
        .AddLoupeAnalysis<KpcaCam>("kpca-cam", "first kernel principal component of the activations (Karmani et al. 2024; pytorch-grad-cam KPCA_CAM)")
        .AddLoupeAnalysis<Fem>("fem", "channels weighted by their share of positions above mean + k·σ (Fuad et al. 2020; pytorch-grad-cam FEM)")
        .AddLoupeAnalysis<SobelCam>("sobel-cam", "the input's Sobel edge map, a baseline that explains nothing (pytorch-grad-cam sobel_cam)")
        .AddLoupeAnalysis<RandomCam>("random-cam", "channel weights drawn from U(−1, 1), seeded per input: a baseline (pytorch-grad-cam RandomCAM)")
        .AddLoupeAnalysis<FinerCam>("finer-cam", "Grad-CAM of the target against its most similar classes (Zhang et al. 2025; pytorch-grad-cam FinerCAM)")
        .AddLoupeAnalysis<ShapleyCam>("shapley-cam", "channel weights from the gradient and the Hessian-vector product, mean(g − ½·H·A) (Cai et al. 2025; pytorch-grad-cam ShapleyCAM)")
        .AddLoupeAnalysis<FullGrad>("full-grad", "input gradient × input plus |bias × gradient| of every convolution and batch norm, scaled and summed (Srinivas & Fleuret 2019; pytorch-grad-cam FullGrad)");
}
