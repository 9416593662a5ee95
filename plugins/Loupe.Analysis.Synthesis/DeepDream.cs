using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Synthesis;

/// <summary>What DeepDream amplifies.</summary>
public enum DreamObjective
{
    /// <summary>mean(A²) over the layer (the original DeepDream's L2 objective).</summary>
    MeanSquare,
    /// <summary>mean(A).</summary>
    Mean,
}

/// <summary>Options of <c>deep-dream</c>.</summary>
public sealed record DeepDreamOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("layer whose activations are amplified")]
    public string Layer { get; init; } = "";
    /// <summary>Channel.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 1_000_000), Description("amplify only this channel (default: the whole layer)")]
    public int? Channel { get; init; }
    /// <summary>Objective.</summary>
    [Description("mean-square (mean of A², the original) or mean (mean of A)")]
    public DreamObjective Objective { get; init; } = DreamObjective.MeanSquare;
    /// <summary>Octaves.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 20), Description("number of scales, smallest first; each is octave_scale times the previous")]
    public int Octaves { get; init; } = 4;
    /// <summary>Octave scale.</summary>
    [System.ComponentModel.DataAnnotations.Range(1.01, 4.0), Description("size ratio between octaves")]
    public double OctaveScale { get; init; } = 1.4;
    /// <summary>Steps per octave.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 100_000), Description("gradient-ascent steps per octave")]
    public int Steps { get; init; } = 10;
    /// <summary>Step size.</summary>
    [System.ComponentModel.DataAnnotations.Range(1e-6, 10.0), Description("step size: I += lr · g / mean|g| (normalised gradient, pixel space [0,1])")]
    public double LearningRate { get; init; } = 0.01;
    /// <summary>Jitter.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 10_000), Description("random shift of up to ±n pixels each step (torch.roll, undone after the step)")]
    public int Jitter { get; init; } = 4;
}

/// <summary>DeepDream (Mordvintsev, Olah &amp; Tyka 2015): on each real input, gradient ascent of a layer's mean(A²) (or mean(A)),
/// multi-scale: octaves from the smallest (÷ octave_scale^(octaves−1)) to the input size, the detail added at each octave
/// carried up to the next; pixels stay in [0,1]. Seeded jitter.</summary>
public sealed class DeepDream : Analysis<DeepDreamOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements =>
        new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations, UsesTarget: false, UsesData: true);

    /// <summary>Image sizes of the octaves, smallest first.</summary>
    public static List<(long H, long W)> OctaveSizes(long h, long w, int octaves, double scale) =>
        Enumerable.Range(0, octaves).Select(o => Math.Pow(scale, octaves - 1 - o))
            .Select(f => ((long)Math.Max(1, Math.Round(h / f)), (long)Math.Max(1, Math.Round(w / f)))).ToList();

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(DeepDreamOptions o, AnalysisValidationContext context)
    {
        var spec = context.Model.DefaultInput;
        var (sh, sw) = OctaveSizes(spec.Height, spec.Width, o.Octaves, o.OctaveScale)[0];
        var (_, shapes, err) = ActivationMax.Probe(context.Model, [o.Layer], sh, sw);
        if (err is not null) { yield return $"the smallest octave ({sh}×{sw}) does not run through the model: {err}; use fewer octaves"; yield break; }
        if (o.Channel is int c && shapes.TryGetValue(o.Layer, out var s) && (s.Length < 2 || c >= s[1]))
            yield return $"option 'channel': {c} is out of range for layer '{o.Layer}' ({(s.Length < 2 ? 1 : s[1])} channels)";
    }

    /// <summary>Dreams a batch of pixels (N×C×H×W in [0,1]).</summary>
    public static Tensor Dream(IModel model, InputSpec input, Tensor pixels, DeepDreamOptions o, Generator gen, Action<int>? onStep = null, CancellationToken cancel = default)
    {
        using var outer = NewDisposeScope();
        long h = pixels.shape[2], w = pixels.shape[3];
        var sizes = OctaveSizes(h, w, o.Octaves, o.OctaveScale);
        Tensor? detail = null;
        Tensor img = pixels;
        int done = 0;
        foreach (var (oh, ow) in sizes)
        {
            var baseImg = oh == h && ow == w ? pixels : Display.Resize(pixels, oh, ow);
            detail = detail is null ? zeros_like(baseImg) : Display.Resize(detail, oh, ow);
            img = (baseImg + detail).clamp(0, 1);
            for (int s = 0; s < o.Steps; s++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                long dy = Transforms.UniformInt(gen, -o.Jitter, o.Jitter), dx = Transforms.UniformInt(gen, -o.Jitter, o.Jitter);
                var x = Transforms.Jitter(img.detach(), dy, dx).requires_grad_(true);
                using var cap = model.Capture([o.Layer], forGradients: true);
                model.Forward(input.Normalize(x));
                var a = cap[o.Layer];
                if (o.Channel is int c) a = a[.., c];
                var score = o.Objective == DreamObjective.MeanSquare ? a.pow(2).mean() : a.mean();
                var g = CheckedOps.Grad([score], [x])[0];
                g = Transforms.Jitter(g, -dy, -dx);
                // Normalise per image so each gets the same step size whatever its gradient scale.
                var gn = g / (g.abs().mean([1, 2, 3], keepdim: true) + 1e-8f);
                img = scope.MoveToOuter((img + (float)o.LearningRate * gn).clamp(0, 1).detach());
                onStep?.Invoke(++done);
            }
            detail = img - baseImg;
        }
        return outer.MoveToOuter(img.detach());
    }

    /// <inheritdoc/>
    public override void Run(DeepDreamOptions o, IAnalysisContext ctx)
    {
        var gen = new Generator((ulong)(uint)ctx.Seed);
        long total = (ctx.InputCount ?? 1) * o.Octaves * o.Steps;
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var n = batch.Ids.Length;
            var dreamed = Dream(ctx.Model, ctx.Input, batch.Pixels, o, gen,
                _ => { done += n; ctx.Progress(Math.Min(1, done / (double)Math.Max(1, total)), $"dream {done / n}/{total / Math.Max(1, n)}"); }, ctx.Cancellation);
            int factor = Display.UpscaleFactor((int)dreamed.shape[3]);
            for (int i = 0; i < n; i++)
            {
                ctx.Output.Raw("dream", batch.Ids[i], NdArray.FromTensor(dreamed[i]));
                ctx.Output.Display("dream", batch.Ids[i], Display.Scale(Display.Image(dreamed[i]), factor));
            }
        }
    }
}
