using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Which reference implementation's output convention to follow for the input-resolution map.</summary>
public enum CamConvention
{
    /// <summary>Captum <c>LayerGradCam</c> + <c>LayerAttribution.interpolate</c>: the raw map, bilinearly upsampled, unnormalised.</summary>
    Captum,
    /// <summary>pytorch-grad-cam: ReLU, per-map (x − min) / (max + 1e-7), then bilinear resize.</summary>
    PytorchGradCam,
}

/// <summary>Options of <c>grad-cam</c>.</summary>
public sealed record GradCamOptions
{
    /// <summary>The convolutional layer to explain.</summary>
    [Required, LayerName(Spatial = true), Description("layer whose activations A (N×K×h×w) are weighted, e.g. layer4 or relu3")]
    public string Layer { get; init; } = "";
    /// <summary>Apply ReLU to the map.</summary>
    [Description("apply ReLU to Σ α_k A_k (the paper; Captum relu_attributions=True)")]
    public bool Relu { get; init; } = true;
    /// <summary>Convention for the upsampled map.</summary>
    [Description("captum (default): raw map upsampled bilinearly; pytorch-grad-cam: min-max per map, then resized")]
    public CamConvention Convention { get; init; } = CamConvention.Captum;
}

/// <summary>Grad-CAM (Selvaraju et al. 2017). The backward pass stops at the target layer: the captured activation
/// is a leaf, so the cost is about one forward pass.</summary>
public sealed class GradCam : Analysis<GradCamOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations);

    /// <inheritdoc/>
    public override void Run(GradCamOptions options, IAnalysisContext ctx)
    {
        var tiles = new List<RgbImage>();
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var (_, capture, ti, selection) = Explain.Forward(ctx.Model, ctx.Target, batch.Input, [options.Layer], forGradients: true);
            using (capture)
            {
                var a = capture[options.Layer];
                var g = Explain.Gradient(ctx.Target, ti, selection, a);
                // Equation (1) in arxiv 1610.02391: α_k = (1/Z) Σ_ij ∂y^c/∂A^k_ij; Equation (2): ReLU(Σ_k α_k A^k).
                var alpha = g.mean([2, 3], keepdim: true);
                var cam = (alpha * a.detach()).sum(1);
                if (options.Relu) cam = nn.functional.relu(cam);
                var h = batch.Input.shape[2]; var w = batch.Input.shape[3];
                Tensor up;
                if (options.Convention == CamConvention.Captum) up = Display.Resize(cam, h, w);
                else
                {
                    var r = nn.functional.relu(cam);
                    var flat = r.flatten(1);
                    r = r - flat.amin([1]).view(-1, 1, 1);
                    r = r / (1e-7f + r.flatten(1).amax([1]).view(-1, 1, 1));
                    up = Display.Resize(r, h, w);
                }
                for (int i = 0; i < batch.Ids.Length; i++)
                    ctx.Output.Raw("cam", batch.Ids[i], NdArray.FromTensor(cam[i]), selection.Labels[i]);
                Explain.Emit(ctx, "cam-upsampled", batch, up, up, selection, tiles);
            }
            done += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(done / (double)ctx.InputCount.Value);
        }
        Explain.EmitGrid(ctx, "grad-cam", tiles);
    }
}
