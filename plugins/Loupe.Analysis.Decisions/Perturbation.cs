using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
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

    /// <summary>Description of the <c>baseline_folder</c> options (Captum's per-example tensor baselines).</summary>
    public const string BaselineFolderDescription = "folder of per-input baselines, <id>.npy for every input id (C×H×W or 1×C×H×W in normalised input space): Captum's per-example tensor baselines (an N×C×H×W baselines tensor, row i for input i); copies made from an input (noise-tunnel's noisy copies, a metric's perturbed copies) take that input's baseline; overrides the fill";

    /// <summary>A <c>baseline_file</c> (C×H×W or 1×C×H×W in normalised input space) expanded to the batch
    /// <paramref name="x"/>; a clear error naming the file when its shape is not the input's.</summary>
    public static Tensor LoadBaseline(string file, Tensor x) => ReadBaseline(file, x).expand_as(x).contiguous();

    /// <summary>One 1×C×H×W baseline of the inputs <paramref name="x"/> from a .npy file (C×H×W or 1×C×H×W), in the
    /// inputs' type; an error naming the file otherwise (a file far larger than one input is refused before it is read).</summary>
    static Tensor ReadBaseline(string file, Tensor x)
    {
        var b = Npy.Read(file, Math.Max(1L << 20, 16 * x.shape[1] * x.shape[2] * x.shape[3])).ToTensor().to(x.dtype);
        if (b.dim() == 3) b = b.unsqueeze(0);
        if (b.dim() != 4 || b.shape[0] != 1 || b.shape[1] != x.shape[1] || b.shape[2] != x.shape[2] || b.shape[3] != x.shape[3])
            throw new LoupeException($"{file}: baseline shape ({string.Join("×", b.shape)}) does not match the input {x.shape[1]}×{x.shape[2]}×{x.shape[3]}");
        return b;
    }

    /// <summary>The per-input baselines of the rows of <paramref name="input"/> from a <c>baseline_folder</c>: row r takes
    /// <c>&lt;id&gt;.npy</c> of the input it was made from (<see cref="AttributionInput.SourceIds"/>); each file read once
    /// per call. Ids that would lead outside the folder, files that are not regular, missing files and rows made from
    /// no single input are errors naming the folder, the input or the file.</summary>
    public static Tensor LoadBaselines(string folder, AttributionInput input)
    {
        var x = input.Input;
        var ids = input.SourceIds ?? input.Ids
            ?? throw new LoupeException($"option 'baseline_folder': these {x.shape[0]} rows were made from no single input (e.g. a metric's mosaics), so no input's baseline applies; use baseline_file or a fill");
        if (ids.Length != x.shape[0]) throw new InvalidOperationException($"{ids.Length} source ids for {x.shape[0]} rows");
        using var scope = NewDisposeScope();
        var read = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var rows = new Tensor[ids.Length];
        for (int r = 0; r < ids.Length; r++)
        {
            if (!read.TryGetValue(ids[r], out var b))
            {
                string what = $"option 'baseline_folder': input '{SafeFile.Printable(ids[r])}'";
                var file = SafeFile.Inside(folder, ids[r] + ".npy", what);
                if (!File.Exists(file)) throw new LoupeException($"{what}: folder '{folder}' has no {SafeFile.Printable(ids[r])}.npy");
                SafeFile.RequireRegular(file, what);
                read[ids[r]] = b = ReadBaseline(file, x);
            }
            rows[r] = b;
        }
        return scope.MoveToOuter(cat(rows, 0));
    }

    /// <summary>The baseline of a batch: the baselines a wrapper gave (<see cref="AttributionInput.Baselines"/>), else the
    /// per-input files of <paramref name="folder"/>, else the file when one is given, else the named or constant fill of the inputs <paramref name="input"/> makes baselines of.</summary>
    public static Tensor BaselineOrFile(AttributionInput input, string? file, string? folder, Fill fill, double blurSigma, float[]? constant, string option = "fill") =>
        input.Baselines is { } given ? given
        : folder is not null ? LoadBaselines(folder, input)
        : file is not null ? LoadBaseline(file, input.Input) : Baseline(input.BaselineOf, fill, blurSigma, input.Context.Input, constant, option);

    /// <summary>Validation of the tensor baselines (<c>baseline_file</c>, <c>baseline_folder</c>) beside a constant fill
    /// (option <paramref name="constantOption"/>), for the methods that took only named and constant fills before.</summary>
    public static IEnumerable<string> TensorBaselineErrors(string? file, string? folder, float[]? constant, string constantOption)
    {
        if (file is not null && constant is not null) yield return $"give either 'baseline_file' or a constant '{constantOption}', not both";
        foreach (var e in BaselineFolderErrors(folder, file, constant, constantOption)) yield return e;
    }

    /// <summary>Validation of a path or reference method's baseline options: the tensor baselines beside a constant
    /// (<see cref="TensorBaselineErrors"/>), the constant against the model's channels, <c>blur_sigma</c> only with
    /// <c>baseline: blur</c>, and a named baseline (property <c>Baseline</c> of <paramref name="options"/>) not beside
    /// a file or folder of baselines, which replace it.</summary>
    public static IEnumerable<string> BaselineErrors(object options, Fill baseline, string? file, string? folder, float[]? constant, string constantOption, InputSpec spec)
    {
        foreach (var e in TensorBaselineErrors(file, folder, constant, constantOption)) yield return e;
        foreach (var e in CheckConstant(constant, constantOption, spec)) yield return e;
        bool tensors = file is not null || folder is not null;
        foreach (var e in OptionRules.OnlyWith(options, baseline == Fill.Blur && !tensors && constant is null, "baseline: blur", "BlurSigma")) yield return e;
        foreach (var e in NamedBesideTensorErrors(options, "Baseline", file, folder)) yield return e;
    }

    /// <summary>A named fill (property <paramref name="named"/> of <paramref name="options"/>, set to another than its
    /// default) beside <c>baseline_file</c> or <c>baseline_folder</c>, whose tensors replace it.</summary>
    public static IEnumerable<string> NamedBesideTensorErrors(object options, string named, string? file, string? folder)
    {
        if ((file is not null || folder is not null) && OptionRules.IsSet(options, named))
            yield return $"give either a named '{OptionRules.YamlName(named)}' or '{(folder is not null ? "baseline_folder" : "baseline_file")}', not both: its baselines replace the named one";
    }

    /// <summary>Validation of a <c>baseline_folder</c> beside the other baseline options.</summary>
    public static IEnumerable<string> BaselineFolderErrors(string? folder, string? file, float[]? constant, string constantOption)
    {
        if (folder is null) yield break;
        if (file is not null) yield return "give either 'baseline_folder' or 'baseline_file', not both";
        if (constant is not null) yield return $"give either 'baseline_folder' or a constant '{constantOption}', not both";
    }

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
