using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Cam;

/// <summary>Which reference implementation's output convention the input-resolution map follows.</summary>
public enum CamConvention
{
    /// <summary>Captum <c>LayerGradCam</c> + interpolation: the raw map (ReLU per <c>relu</c>), bilinearly upsampled, unnormalised.</summary>
    Captum,
    /// <summary>pytorch-grad-cam: ReLU, per-map (x − min) / (max + 1e-7), then bilinear resize; ReLU, mean over layers and the
    /// min-max scaling once more (also for one layer); Score-CAM upsamples with align_corners = true.</summary>
    PytorchGradCam,
}

/// <summary>How a layer map is upsampled to the input under the Captum convention (<c>LayerAttribution.interpolate</c>'s interpolate_mode).</summary>
public enum CamUpsample
{
    /// <summary>Bilinear, align_corners = false.</summary>
    Bilinear,
    /// <summary>Nearest neighbour (PyTorch's legacy 'nearest'; Captum <c>GuidedGradCam</c>'s default).</summary>
    Nearest,
    /// <summary>Bicubic, align_corners = false (PyTorch's 'bicubic').</summary>
    Bicubic,
    /// <summary>Adaptive average pooling (PyTorch's 'area').</summary>
    Area,
    /// <summary>Nearest with half-pixel centres (PyTorch's 'nearest-exact').</summary>
    NearestExact,
}

/// <summary>How a CAM combines the maps of several layers.</summary>
public enum CamAggregate
{
    /// <summary>Their mean (multi-layer aggregation).</summary>
    Mean,
    /// <summary>Their product (pytorch-grad-cam's RefineCAM).</summary>
    Product,
    /// <summary>One map of their activations together: each layer's |activation| resized (bilinear) to the last
    /// layer's grid and concatenated along the channels (pytorch-grad-cam's fasterrcnn_reshape_transform over an FPN's
    /// levels, 'pool' last).</summary>
    Concat,
}

/// <summary>Options shared by every CAM method.</summary>
public record CamOptions : IReshapesLayers, IAttributesToLayerInput
{
    /// <summary>One layer.</summary>
    [LayerName(Spatial = true), Description("layer whose activations A (N×K×h×w) are weighted, e.g. layer4 or relu3")]
    public string? Layer { get; init; }
    /// <summary>Several layers (maps are averaged).</summary>
    [LayerName(Spatial = true), Description("several layers: their upsampled maps are averaged (multi-layer aggregation; aggregate: product multiplies them)")]
    public string[]? Layers { get; init; }
    /// <summary>ReLU on the map.</summary>
    [Description("apply ReLU to the layer map (true: the papers, pytorch-grad-cam, Captum relu_attributions=True; Captum LayerGradCam's own default is False: set relu: false for it)")]
    public bool Relu { get; init; } = true;
    /// <summary>Output convention.</summary>
    [Description("captum (default): raw map upsampled bilinearly; pytorch-grad-cam: min-max per map, resized, averaged over layers, min-max again")]
    public CamConvention Convention { get; init; } = CamConvention.Captum;
    /// <summary>Token/channels-last layout of the layers.</summary>
    [Description("lay the layer out as N×C×h×w: auto (from its shape), none, nhwc (Swin/ConvNeXt channels-last), vit (drop the leading tokens that are not patches — class token, DeiT's distillation token, registers — of N×(k+h·w)×C), tokens (N×(h·w)×C) — pytorch-grad-cam's reshape_transform")]
    public LayerReshape Reshape { get; init; } = LayerReshape.Auto;

    /// <summary>Explicit token grid.</summary>
    [Description(IReshapesLayers.TokenGridDescription)]
    public int[]? TokenGrid { get; init; }

    /// <summary>Upsampling under the Captum convention.</summary>
    [Description("convention captum only: upsampling of the layer map, as Captum's interpolate_mode (F.interpolate's modes): bilinear, nearest, bicubic, area or nearest-exact (default bilinear — Captum LayerAttribution.interpolate's own default is nearest; nearest for guided-grad-cam as Captum's GuidedGradCam)")]
    public CamUpsample? Upsample { get; init; }

    /// <summary>The layer's input instead of its output.</summary>
    [Description(LayerInputs.Description + " (Captum LayerGradCam's option, offered by every CAM method)")]
    public bool AttributeToLayerInput { get; init; }

    /// <summary>How the maps of several layers are combined.</summary>
    [Description("several layers: mean (the default: multi-layer aggregation, pytorch-grad-cam's aggregate_multi_layers) or product (pytorch-grad-cam's RefineCAM with this method as base_method: under its convention each layer's map is the method's for that layer alone — ReLU, min-max — and their product is min-max scaled; the product of the upsampled maps under Captum's); it denoises the maps of early layers; or concat (pytorch-grad-cam's fasterrcnn_reshape_transform: one map of the layers' |activations| resized bilinearly to the last layer's grid and concatenated along the channels — a detector's FPN levels with 'pool' last; for methods that read activations only: eigen-cam, kpca-cam, random-cam, fem)")]
    public CamAggregate Aggregate { get; init; }

    /// <summary>First principal component of the weighted activations instead of their channel sum.</summary>
    [Description("pytorch-grad-cam's eigen_smooth: the map is the first principal component of the weighted activations (h·w points of K values, centred, SVD; signed to correlate positively with their channel mean) instead of their sum over channels; eigen-cam, eigen-grad-cam and kpca-cam are projections already and are unchanged")]
    public bool EigenSmooth { get; init; }

    /// <summary>The layers to explain.</summary>
    public IReadOnlyList<string> AllLayers => Layers is { Length: > 0 } ? Layers : Layer is { Length: > 0 } ? [Layer] : [];
}

/// <summary>What a CAM method sees for one layer.</summary>
/// <param name="Activation">A, N×K×h×w (detached).</param>
/// <param name="Gradient">∂y/∂A (N×K×h×w), or null for gradient-free methods.</param>
/// <param name="Layer">Layer name.</param>
/// <param name="Input">The normalised input batch.</param>
/// <param name="Selection">What each row explains.</param>
/// <param name="Context">The step context (for methods that run extra forward passes).</param>
public sealed record CamLayer(Tensor Activation, Tensor? Gradient, string Layer, Tensor Input, TargetSelection Selection, IAnalysisContext Context)
{
    /// <summary>The ids of the inputs the rows were made from (<see cref="AttributionInput.SourceIds"/>), for draws seeded
    /// per input; null where the rows come from no single input.</summary>
    public string[]? Ids { get; init; }
    /// <summary>How the layer's own output was laid out as <see cref="Activation"/> (for methods that intervene on the layer).</summary>
    public LayerReshape Reshape { get; init; } = LayerReshape.None;
    /// <summary>The token layout <see cref="Reshape"/> used (the image's aspect or an explicit grid).</summary>
    public TokenLayout Layout { get; init; }
    /// <summary>The layer's own output, before <see cref="Reshape"/> (a ViT's class token included).</summary>
    public Tensor? Own { get; init; }
    /// <summary>H·A (N×K×h×w), the Hessian of the score w.r.t. the layer times its activation, for methods that ask
    /// for it (<c>UsesHessian</c>), else null.</summary>
    public Tensor? HessianTimesActivation { get; init; }
}

/// <summary>The CAM pipeline, once (as pytorch-grad-cam's base_cam): capture the layers, forward, gradients to the layers
/// (never to the input), one map per layer from <see cref="LayerMap"/>, ReLU, the chosen convention, multi-layer mean.
/// Each method overrides only <see cref="LayerMap"/> (and says whether it needs gradients).</summary>
public abstract class CamAnalysis<TOptions> : AttributionAnalysis<TOptions> where TOptions : CamOptions, new()
{
    /// <summary>True when <see cref="LayerMap"/> needs ∂y/∂A.</summary>
    protected virtual bool UsesGradients => true;

    /// <summary>The method's map for one layer, N×h×w (or N×K×h×w per channel), before ReLU and scaling.</summary>
    protected virtual Tensor LayerMap(TOptions options, CamLayer layer) => WeightedActivations(options, layer).sum(1);

    /// <summary>The weighted activations (N×K×h×w) whose channel sum is the map: what <c>eigen_smooth</c> projects
    /// instead of summing (pytorch-grad-cam's get_cam_image). Methods whose map is not such a sum override
    /// <see cref="LayerMap"/> and say so with <see cref="ProjectsAlready"/>, or refuse eigen_smooth.</summary>
    protected virtual Tensor WeightedActivations(TOptions options, CamLayer layer) =>
        throw new LoupeException($"{ArtifactName}: eigen_smooth does not apply: the map is not a sum of weighted activations");

    /// <summary>True when the map already is a principal-component projection (eigen_smooth leaves it, as pytorch-grad-cam).</summary>
    protected virtual bool ProjectsAlready => false;

    /// <inheritdoc/>
    protected override string RawName => ArtifactName + "-layer";

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations
        | (UsesGradients ? ModelCapabilities.Gradients : ModelCapabilities.None) | ExtraCapabilities) { HandlesSideInputs = !ForwardsCopies };

    /// <summary>True for methods that forward copies of the rows (Score-CAM's masked inputs, Ablation-CAM's ablated
    /// batches): they are refused on models with side inputs. The others forward the batch once, with its side inputs.</summary>
    protected virtual bool ForwardsCopies => false;

    /// <summary>True when <see cref="LayerMap"/> needs the Hessian of the score w.r.t. each layer times its activation
    /// (<see cref="CamLayer.HessianTimesActivation"/>): the gradients are then taken with create_graph (double backward).</summary>
    protected virtual bool UsesHessian => false;

    /// <summary>The per-row score whose gradients weight the layers (default: the step's target).</summary>
    protected virtual Tensor Score(TOptions options, TargetInput output, TargetSelection selection, IAnalysisContext context) =>
        context.Target.Scores(output, selection);

    /// <summary>H·A for one layer: d⟨∂y/∂A, A⟩/dA with A held fixed (pytorch-grad-cam's hvp, grad_outputs = A); zero where
    /// the gradient does not depend on A (a score piecewise linear in the layer).</summary>
    static Tensor HessianTimes(Tensor gradient, Tensor activation, bool retain)
    {
        if (!gradient.requires_grad) return zeros_like(activation);
        return CheckedOps.Grad([gradient], [activation], [activation.detach()], retainGraph: retain, allowUnused: true)[0] is { } hv && hv.IsInvalid == false
            ? hv.detach() : zeros_like(activation);
    }

    /// <summary>Capabilities beyond the pipeline's (e.g. interventions for Ablation-CAM).</summary>
    protected virtual ModelCapabilities ExtraCapabilities => ModelCapabilities.None;

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(TOptions options, AnalysisValidationContext context)
    {
        if (options.AllLayers.Count == 0) yield return "give a 'layer' (or 'layers')";
        foreach (var grid in TokenLayout.Errors(options)) yield return grid;
        if (options.Layer is not null && options.Layers is not null) yield return "give either 'layer' or 'layers', not both";
        if (options.Upsample is not null && options.Convention == CamConvention.PytorchGradCam)
            yield return "option 'upsample' applies to convention captum; pytorch-grad-cam always resizes bilinearly";
        if (!options.Relu && options.Convention == CamConvention.PytorchGradCam)
            yield return "option 'relu: false' applies to convention captum; pytorch-grad-cam clips every CAM at 0 before scaling it (until 2026-12-06 the option was ignored here)";
        if (LayerInputs.Check(options.AttributeToLayerInput, context.Model) is { } e) yield return e;
        if (options.Aggregate == CamAggregate.Product && options.AllLayers.Count < 2)
            yield return "option 'aggregate: product' (RefineCAM) combines several layers: give 'layers' with two or more";
        if (options.Aggregate == CamAggregate.Concat && options.AllLayers.Count < 2)
            yield return "option 'aggregate: concat' (pytorch-grad-cam's fasterrcnn_reshape_transform) joins several layers' activations: give 'layers' with two or more";
        if (options.Aggregate == CamAggregate.Concat && (UsesGradients || ForwardsCopies))
            yield return "option 'aggregate: concat' joins activations, which this method does not read alone (it needs their gradients or masked forward passes): use it with eigen-cam, kpca-cam, random-cam or fem";
    }

    /// <inheritdoc/>
    public override AttributionResult Attribute(TOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var layers = options.AllLayers;
        var x = input.Input;
        long h = x.shape[2], w = x.shape[3];
        var (_, capture, ti, selection) = Explain.Forward(ctx.Model, ctx.Target, x, layers, UsesGradients, options.AttributeToLayerInput, input.Selection, input.Slot);
        var maps = new List<Tensor>();
        Tensor? raw = null;
        List<Tensor> acts;
        Tensor[]? grads = null, hvps = null;
        using (capture)
        {
            var captured = layers.Select(l => capture[l]).ToList();
            if (UsesGradients)
            {
                using var s = NewDisposeScope();
                var score = Score(options, ti, selection, ctx).sum();
                var g = CheckedOps.Grad([score], captured, retainGraph: UsesHessian, createGraph: UsesHessian);
                if (UsesHessian) hvps = captured.Select((a, i) => s.MoveToOuter(HessianTimes(g[i], a, i < captured.Count - 1))).ToArray();
                grads = g.Select(t => s.MoveToOuter(t.detach())).ToArray();
            }
            // Own handles on the activations: the capture ends here, so the extra forward passes of Score-CAM and
            // Ablation-CAM do not copy (or, in ONNX Runtime, output) the layer again on every masked batch.
            acts = captured.Select(a => a.detach()).ToList();
        }
        var grids = new List<CamLayer>();
        for (int i = 0; i < layers.Count; i++)
        {
            var image = TokenLayout.Of(options, (h, w));
            var (mode, error) = LayerReshapes.Resolve(options.Reshape, acts[i].shape, image);
            if (error is not null) throw new LoupeException($"layer '{layers[i]}'{(options.AttributeToLayerInput ? " (its input)" : "")}: {error}");
            grids.Add(new CamLayer(LayerReshapes.ToGrid(acts[i], mode, image), grads?[i] is { } g ? LayerReshapes.ToGrid(g, mode, image) : null, layers[i], x, selection, ctx)
            {
                Ids = input.SourceIds ?? input.Ids,
                Reshape = mode,
                Layout = image,
                Own = acts[i],
                HessianTimesActivation = hvps?[i] is { } hv ? LayerReshapes.ToGrid(hv, mode, image) : null,
            });
        }
        if (options.Aggregate == CamAggregate.Concat) grids = [Concatenated(grids)];
        foreach (var grid in grids)
        {
            var map = options.EigenSmooth && !ProjectsAlready ? Projections.FirstComponent(WeightedActivations(options, grid)) : LayerMap(options, grid);
            if (options.Relu || options.Convention == CamConvention.PytorchGradCam) map = nn.functional.relu(map);
            raw ??= map;
            maps.Add(options.Convention == CamConvention.PytorchGradCam ? Display.Resize(ScaleEach(map), h, w) : Upsample(options, map, h, w));
        }
        // RefineCAM multiplies what the base method gives for each layer alone (under pytorch-grad-cam's convention: its
        // ReLU and min-max once more, as aggregate_multi_layers ends a one-layer call).
        var combined = maps.Count == 1 ? maps[0]
            : options.Aggregate == CamAggregate.Product
                ? maps.Select(m => options.Convention == CamConvention.PytorchGradCam ? ScaleEach(nn.functional.relu(m)) : m).Aggregate((a, b) => a * b)
                : stack(maps, 0).mean([0]);
        // pytorch-grad-cam ends every call with aggregate_multi_layers: ReLU, mean over layers and scale_cam_image once
        // more, also for a single layer (a map resized by a non-integer factor peaks below 1 before it).
        if (options.Convention == CamConvention.PytorchGradCam) combined = ScaleEach(nn.functional.relu(combined));
        // Captum's convention, one layer: the map is the layer-resolution CAM upsampled (what LayerGradCam returns,
        // then LayerAttribution.interpolate), so a noise tunnel combines the layer-resolution CAMs as Captum's does.
        Func<Tensor, Tensor>? mapOfRaw = options.Convention != CamConvention.PytorchGradCam && grids.Count == 1
            ? r => Upsample(options, r, h, w) : null;
        return new AttributionResult(combined, selection, grids.Count == 1 ? raw : null) { MapOfRaw = mapOfRaw };
    }

    /// <summary>pytorch-grad-cam's fasterrcnn_reshape_transform: the layers' |activations| resized bilinearly
    /// (align_corners false) to the last layer's grid and concatenated along the channels, as one layer.</summary>
    public static CamLayer Concatenated(IReadOnlyList<CamLayer> layers)
    {
        var last = layers[^1].Activation;
        long gh = last.shape[2], gw = last.shape[3];
        var joined = cat(layers.Select(l => nn.functional.interpolate(l.Activation.abs(), [gh, gw], mode: InterpolationMode.Bilinear, align_corners: false)).ToArray(), 1);
        return layers[^1] with { Activation = joined, Gradient = null, Layer = string.Join("+", layers.Select(l => l.Layer)), Reshape = LayerReshape.None, Own = joined, HessianTimesActivation = null };
    }

    /// <summary>Captum's convention: the layer-resolution map resized to the input (bilinear, or nearest as Captum's
    /// interpolate default).</summary>
    static Tensor Upsample(TOptions options, Tensor map, long h, long w) => options.Upsample switch
    {
        CamUpsample.Nearest => Interpolate(map, h, w, InterpolationMode.Nearest),
        CamUpsample.NearestExact => Interpolate(map, h, w, InterpolationMode.NearestExact),
        CamUpsample.Bicubic => Interpolate(map, h, w, InterpolationMode.Bicubic, alignCorners: false),
        CamUpsample.Area => Interpolate(map, h, w, InterpolationMode.Area),
        _ => Display.Resize(map, h, w),
    };

    /// <summary>F.interpolate of N×h×w or N×K×h×w maps to <paramref name="h"/>×<paramref name="w"/> (as Captum's
    /// LayerAttribution.interpolate).</summary>
    static Tensor Interpolate(Tensor map, long h, long w, InterpolationMode mode, bool? alignCorners = null) => map.dim() == 4
        ? nn.functional.interpolate(map, [h, w], mode: mode, align_corners: alignCorners)
        : nn.functional.interpolate(map.unsqueeze(1), [h, w], mode: mode, align_corners: alignCorners).squeeze(1);

    /// <summary>pytorch-grad-cam's scale_cam_image without the resize: per map x − min, then / (1e-7 + max).</summary>
    public static Tensor ScaleEach(Tensor maps)
    {
        using var scope = NewDisposeScope();
        long n = maps.shape[0];
        var flat = maps.reshape(n, -1);
        var shifted = flat - flat.amin([1], keepdim: true);
        var scaled = shifted / (1e-7f + shifted.amax([1], keepdim: true));
        return scope.MoveToOuter(scaled.view(maps.shape));
    }
}
