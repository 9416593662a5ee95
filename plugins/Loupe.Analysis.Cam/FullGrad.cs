using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Cam;

/// <summary>Options of <c>full-grad</c>.</summary>
public sealed record FullGradOptions
{
    /// <summary>pytorch-grad-cam's eigen_smooth for FullGrad.</summary>
    [Description("pytorch-grad-cam's eigen_smooth for FullGrad: the input's per-channel maps and each bias layer's map, each scaled and shrunk to (H/8)×(W/8), are projected on their first principal component (signed as eigen_smooth's other CAMs), which is scaled and resized to the input, instead of their sum")]
    public bool EigenSmooth { get; init; }
}

/// <summary>FullGrad (Srinivas &amp; Fleuret 2019) in pytorch-grad-cam's <c>FullGrad</c> convention, on the model's graph
/// form (<see cref="ModelCapabilities.Graph"/>, both backends): |∂y/∂x ⊙ x| per input channel plus, for every 2-D
/// convolution with a bias and every batch norm (effective bias β − μγ/√(σ² + ε)), |b ⊙ ∂y/∂z| at that layer's output
/// z (from the graph with batch norms folded into their convolutions: one fewer pass per batch norm each way). Each of these maps is min-max scaled per input and channel ((m − min) / (max + 1e-7)), resized bilinearly to the
/// input (align_corners = false), summed over channels and layers, and the sum min-max scaled once more. One forward and
/// one backward through the graph; the gradients at the layer outputs come from the same backward.</summary>
public sealed class FullGrad : AttributionAnalysis<FullGradOptions>
{
    /// <inheritdoc/>
    public override string ArtifactName => "full-grad";
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.Graph);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FullGradOptions options, AnalysisValidationContext context)
    {
        if (context.Model is not IModelGraphSource source) yield break;   // the capability check names what is missing
        string? error = null;
        try
        {
            using var scope = NewDisposeScope();
            if (!source.Graph().Nodes.Any(Biased))
                error = "full-grad: the model's graph has no convolution with a bias and no batch norm: FullGrad's bias terms would be empty";
        }
        catch (LoupeException e) { error = $"full-grad: the biases of the model's layers come from its graph form, which it lacks: {e.Message}"; }
        if (error is not null) yield return error;
    }

    const string CheckedKey = "full-grad: graph checked: ";

    /// <summary>Nodes whose bias FullGrad uses (pytorch-grad-cam: <c>Conv2d</c> with a bias, <c>BatchNorm2d</c>).</summary>
    static bool Biased(GraphNode n) => n.Op == GraphOp.Conv && n.Bias is not null || n.Op == GraphOp.BatchNorm;

    /// <inheritdoc/>
    public override AttributionResult Attribute(FullGradOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        if (ctx.Target.RequiredLayers.Count > 0)
            throw new LoupeException($"full-grad: explains model outputs; the target reads layers ({string.Join(", ", ctx.Target.RequiredLayers)})");
        if (ctx.Model is not IModelGraphSource source) throw new LoupeException("full-grad: the model has no graph form (capability graph)");
        using var scope = NewDisposeScope();
        // Batch norms folded into the convolutions before them (as the torchvision backend's own forward does): a folded
        // layer outputs the batch norm's output, so the gradient there is the batch norm's, and the convolution's own
        // output gradient is s ⊙ that (s = γ/√(σ² + ε)). No batch-norm pass forward or backward.
        var merged = new Dictionary<int, (Tensor? Bias, Tensor Scale, Tensor Shift)>();
        var graph = source.Graph().FoldBatchNorms(out _, merged);
        var x = ModelGraph.PreferredLayout(input.Input.detach()).requires_grad_(true);
        var values = graph.Run(x);
        var y = values[^1];
        var ti = new TargetInput(y, l => throw new LoupeException($"full-grad: no layer '{l}'"));
        TargetSelection selection;
        using (no_grad()) selection = input.Selection ?? ctx.Target.Select(new TargetInput(y.detach(), ti.Layer), input.Slot);
        // The graph form must reproduce the model: checked against one forward of the model on the step's first batch
        // (the graph's own forward is the one differentiated, so later batches cost one forward + one backward).
        if (!ctx.RunCache.ContainsKey(CheckedKey + ctx.StepId))
        {
            Tensor output;
            using (no_grad()) output = ctx.Model.Forward(input.Input);
            var tolerance = 1e-3 * (output.abs().max().item<float>() + 1e-6);
            if (!y.shape.SequenceEqual(output.shape) || (y.detach() - output).abs().max().item<float>() > tolerance)
                throw new LoupeException("full-grad: the model's graph form does not reproduce its output (a module whose forward differs from its graph form?)");
            ctx.RunCache[CheckedKey + ctx.StepId] = true;
        }
        // Bias terms in node order, each with the node whose output gradient it reads: a folded convolution's own bias × s
        // and the batch norm's effective bias t (both at the folded output); a standalone batch norm (now a depthwise
        // convolution with bias t) and any other convolution with a bias, their bias.
        var terms = new List<(int Node, Tensor Bias)>();
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            if (values[i].dim() != 4) continue;
            if (merged.TryGetValue(i, out var m))
            {
                if (graph.Nodes[i].Op == GraphOp.Conv && m.Bias is { } own) terms.Add((i, own * m.Scale));
                terms.Add((i, m.Shift));
            }
            else if (graph.Nodes[i].Op == GraphOp.Conv && graph.Nodes[i].Bias is { } b) terms.Add((i, b));
        }
        var layers = terms.Select(t => t.Node).Distinct().ToList();
        var score = ctx.Target.Scores(ti, selection).sum();
        var grads = CheckedOps.Grad([score], [x, .. layers.Select(i => values[i])]);
        long h = x.shape[2], w = x.shape[3];
        if (options.EigenSmooth)
            return new AttributionResult(scope.MoveToOuter(EigenSmoothed((grads[0] * x.detach()).abs(),
                terms.Select(t => ScaledBiasChannels(t.Bias.detach(), grads[layers.IndexOf(t.Node) + 1])))), selection);
        // Bilinear resizing is linear: the layers' maps are summed at each resolution and each sum resized once (resnet18:
        // 5 resizes to the input instead of 21), the same sum up to float rounding.
        var byResolution = new Dictionary<(long, long), Tensor>();
        void Add(Tensor map)
        {
            var key = (map.shape[1], map.shape[2]);
            byResolution[key] = byResolution.TryGetValue(key, out var sum) ? sum.add_(map) : map;
        }
        Add(ScaledChannels((grads[0] * x.detach()).abs()));
        foreach (var (node, bias) in terms) Add(ScaledBiasChannels(bias.detach(), grads[layers.IndexOf(node) + 1]));
        Tensor? total = null;
        foreach (var ((mh, mw), sum) in byResolution)
        {
            var resized = mh != h || mw != w ? Display.Resize(sum, h, w) : sum;
            total = total is null ? resized : total.add_(resized);
        }
        return new AttributionResult(scope.MoveToOuter(CamAnalysis<CamOptions>.ScaleEach(total!)), selection);
    }

    /// <summary>pytorch-grad-cam's FullGrad with eigen_smooth: the maps are the input's channels |∂y/∂x ⊙ x| (each scaled
    /// and at input size) and each bias term's channel sum (<paramref name="layerSums"/>, each at its layer's size,
    /// resized to the input); all are scaled once more and shrunk to (H/8)×(W/8) (bilinear, as cv2.resize), projected
    /// on their first principal component (<see cref="Projections.FirstComponent"/>), and the projection scaled, resized
    /// to the input and scaled again (the library's aggregate of its one layer).</summary>
    static Tensor EigenSmoothed(Tensor inputMaps, IEnumerable<Tensor> layerSums)
    {
        long n = inputMaps.shape[0], c = inputMaps.shape[1], h = inputMaps.shape[2], w = inputMaps.shape[3];
        if (h / 8 == 0 || w / 8 == 0)
            throw new LoupeException($"full-grad: eigen_smooth projects maps shrunk to (H/8)×(W/8), which is empty for a {h}×{w} input");
        var maps = new List<Tensor> { CamAnalysis<CamOptions>.ScaleEach(inputMaps.reshape(n * c, h, w)).view(n, c, h, w) };
        foreach (var sum in layerSums)
            maps.Add((sum.shape[1] != h || sum.shape[2] != w ? Display.Resize(sum, h, w) : sum).unsqueeze(1));
        var all = cat(maps, 1);
        long k = all.shape[1];
        var small = Display.Resize(CamAnalysis<CamOptions>.ScaleEach(all.reshape(n * k, h, w)), h / 8, w / 8).view(n, k, h / 8, w / 8);
        var projected = Projections.FirstComponent(small.nan_to_num(0.0));
        return CamAnalysis<CamOptions>.ScaleEach(Display.Resize(CamAnalysis<CamOptions>.ScaleEach(projected), h, w));
    }

    /// <summary><see cref="ScaledChannels"/> of |b ⊙ g| (bias b per channel, gradient g: N×K×h×w) without forming it:
    /// |b_k g| = |b_k|·|g| (exactly, in floats), so its minimum and maximum per input and channel are |b_k| times those
    /// of |g|, and Σ_k (|b_k||g_k| − |b_k|lo_k) / (1e-7 + |b_k|(hi_k − lo_k)) is one channel contraction of |g| with
    /// c_k = |b_k| / (1e-7 + |b_k|(hi_k − lo_k)), less Σ_k c_k lo_k: three passes over g instead of nine (a 1e-7-relative
    /// rounding difference, from factoring |b_k| out).</summary>
    static Tensor ScaledBiasChannels(Tensor bias, Tensor grad)   // grad is overwritten by |grad|
    {
        if (FullGradBias.TrySum(bias, grad) is { } direct) return direct;
        using var scope = NewDisposeScope();
        long n = grad.shape[0], k = grad.shape[1], mh = grad.shape[2], mw = grad.shape[3];
        var g = grad.abs_();   // in place: the gradient is this call's own (no 86 MB of new pages per resnet18 batch of 8)
        var (lo, hi) = g.flatten(2).aminmax(2);                                  // N×K each, one pass
        var b = bias.abs().view(1, k);
        var c = b / (1e-7f + b * (hi - lo));
        // Channel contraction in g's own layout: N×hw×K for channels-last gradients, N×K×hw otherwise (both views).
        var sum = g.permute(0, 2, 3, 1).is_contiguous()
            ? g.permute(0, 2, 3, 1).reshape(n, mh * mw, k).MatMul(c.unsqueeze(2)).view(n, mh, mw)
            : c.unsqueeze(1).MatMul(g.reshape(n, k, mh * mw)).view(n, mh, mw);
        sum = sum - (c * lo).sum(1).view(n, 1, 1);
        return scope.MoveToOuter(sum);
    }

    /// <summary>pytorch-grad-cam's scale_accross_batch_and_channels summed over channels: Σ_k resize(scale(M_k)), N×h×w.
    /// Bilinear resizing is linear and the same for every channel, so the sum is taken at the layer's resolution and
    /// resized once (the same map, without K full-resolution copies: 822 MB for resnet18's last batch norm at 224², batch 8).
    /// Returned at the maps' resolution (N×mh×mw); the caller resizes.</summary>
    static Tensor ScaledChannels(Tensor maps)
    {
        using var scope = NewDisposeScope();
        long n = maps.shape[0], k = maps.shape[1], mh = maps.shape[2], mw = maps.shape[3];
        return scope.MoveToOuter(CamAnalysis<CamOptions>.ScaleEach(maps.reshape(n * k, mh, mw)).view(n, k, mh, mw).sum(1));
    }
}
