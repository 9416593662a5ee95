using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Analysis.Decisions;

/// <summary>Batched evaluation of perturbed copies, shared by the perturbation methods (baselines: the toolkit's
/// <see cref="Baselines"/>).</summary>
public static class Perturbation
{
    /// <summary>The description of the path and reference methods' <c>multiply_by_inputs</c>.</summary>
    public const string MultiplyByInputsDescription = "multiply by (x − baseline), the global attribution (Captum's multiply_by_inputs, default true); false gives the local attribution: the averaged gradients (integrated-gradients, gradient-shap) or the multipliers (deeplift, deeplift-shap), as Captum with multiply_by_inputs=False";

    /// <summary>Description of the constant-fill options.</summary>
    public const string ConstantDescription = "older spelling of a constant given to ";

    /// <summary>Checks a constant fill against the input's channel count (<see cref="Baselines.CheckConstant"/>).</summary>
    public static IEnumerable<string> CheckConstant(float[]? values, string option, InputSpec spec) => Baselines.CheckConstant(values, option, spec);

    /// <summary>A baseline image per input (<see cref="Baselines.Of"/>).</summary>
    public static Tensor Baseline(Tensor x, Fill fill, double blurSigma, InputSpec spec, float[]? constant = null, string option = "fill_value") =>
        Baselines.Of(x, fill, blurSigma, spec, constant, option);

    /// <summary>Description of the <c>baseline_file</c> options (Captum's tensor baselines).</summary>
    public const string BaselineFileDescription = "a .npy baseline in normalised input space, C×H×W or 1×C×H×W, the same for every input (Captum's tensor baselines; overrides the fill)";

    /// <summary>A <c>baseline_file</c> (C×H×W or 1×C×H×W in normalised input space) expanded to the batch
    /// <paramref name="x"/>; a clear error naming the file when its shape is not the input's.</summary>
    public static Tensor LoadBaseline(string file, Tensor x)
    {
        var b = Npy.Read(file).ToTensor();
        if (b.dim() == 3) b = b.unsqueeze(0);
        if (b.dim() != 4 || b.shape[0] != 1 || b.shape[1] != x.shape[1] || b.shape[2] != x.shape[2] || b.shape[3] != x.shape[3])
            throw new LoupeException($"{file}: baseline shape ({string.Join("×", b.shape)}) does not match the input {x.shape[1]}×{x.shape[2]}×{x.shape[3]}");
        return b.expand_as(x).contiguous();
    }

    /// <summary>The baseline of a batch: the file when one is given, else the named or constant fill of the inputs
    /// <paramref name="input"/> makes baselines of.</summary>
    public static Tensor BaselineOrFile(AttributionInput input, string? file, Fill fill, double blurSigma, float[]? constant, string option = "fill") =>
        file is not null ? LoadBaseline(file, input.Input) : Baseline(input.BaselineOf, fill, blurSigma, input.Context.Input, constant, option);

    /// <summary>Scores of the target for every input × mask: x ⊙ (1 − M) + fill ⊙ M for masks M (P×1×H×W, 1 = removed),
    /// all images of the batch × a chunk of masks per forward pass. Returns N×P.</summary>
    /// <param name="masks">Produces masks [start, start + count).</param>
    /// <param name="probability">Score with the softmax probability of the selected class instead of the target score.</param>
    /// <param name="score">Scores copies another way than the target's score (e.g. D-RISE's detection similarity).</param>
    public static Tensor MaskedScores(IAnalysisContext ctx, Tensor x, Tensor fill, long maskCount, Func<long, long, Tensor> masks,
        TargetSelection selection, int? microBatch, bool probability = false, Action<double>? progress = null, Func<TargetInput, TargetSelection, Tensor>? score = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long chunk = Math.Max(1, Explain.CopiesPerForward(ctx, x, microBatch) / n);
        var parts = new List<Tensor>();
        for (long p0 = 0; p0 < maskCount; p0 += chunk)
        {
            using var chunkScope = NewDisposeScope();
            ctx.Cancellation.ThrowIfCancellationRequested();
            long p = Math.Min(chunk, maskCount - p0);
            var m = masks(p0, p).unsqueeze(0);                                             // 1×p×1×h×w
            var copies = (x.unsqueeze(1) * (1 - m) + fill.unsqueeze(1) * m).reshape(n * p, c, h, w);
            var rows = Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Repeat(i, (int)p)).ToArray();
            var sel = selection.Rows(rows);
            using var held = SideInputs.ForRows(ctx.Model, rows);   // each copy keeps its row's side inputs
            var (output, capture, ti, _) = Explain.Forward(ctx.Model, ctx.Target, copies, [], forGradients: false, sel);
            Tensor s;
            using (capture)
                s = score is not null ? score(ti, sel)
                    : probability && sel.Classes is not null
                    ? nn.functional.softmax(output, 1).gather(1, tensor(sel.Classes, dtype: ScalarType.Int64).unsqueeze(1)).squeeze(1)
                    : ctx.Target.Scores(ti, sel);
            parts.Add(chunkScope.MoveToOuter(s.view(n, p)));
            progress?.Invoke((p0 + p) / (double)maskCount);
        }
        return scope.MoveToOuter(cat(parts, 1));
    }

    /// <summary>Masks of axis-aligned boxes (P×1×H×W, 1 inside) from box origins and sizes, by broadcasting.</summary>
    public static Tensor BoxMasks(Tensor originY, Tensor originX, long sizeY, long sizeX, long h, long w)
    {
        using var scope = NewDisposeScope();
        var rows = arange(h).view(1, -1);
        var cols = arange(w).view(1, -1);
        var oy = originY.view(-1, 1); var ox = originX.view(-1, 1);
        var inRow = (rows >= oy).logical_and(rows < oy + sizeY).to(ScalarType.Float32);
        var inCol = (cols >= ox).logical_and(cols < ox + sizeX).to(ScalarType.Float32);
        return scope.MoveToOuter((inRow.unsqueeze(2) * inCol.unsqueeze(1)).unsqueeze(1));
    }
}
