using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Text;
using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
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
    [Required, FilePath, Description("float32 .npy with one value per channel of the layer")]
    public string Vector { get; init; } = "";
}

/// <summary>Options of <c>activation-max</c>.</summary>
public sealed record ActivationMaxOptions
{
    /// <summary>One objective.</summary>
    [Description("objective expression: class:sneaker, class:3, relu3:12 (channel mean), relu3:12:3:3 (neuron), relu3 (layer mean), weighted sums such as 'relu3:12 - 0.5 * relu3:7'; 'class:*' expands to every class")]
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
    [Description("pixels, or fft (Fourier coefficients scaled by 1/frequency, Lucid)")]
    public ParameterizationKind Parameterization { get; init; } = ParameterizationKind.Fft;
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
    /// <summary>Display size.</summary>
    [System.ComponentModel.DataAnnotations.Range(16, 4096), Description("display PNGs are upscaled (nearest) to at least this width")]
    public int DisplaySize { get; init; } = 112;
}

/// <summary>The result of an optimisation.</summary>
/// <param name="Images">N×C×H×W in [0,1] pixel space (unbounded with range none).</param>
/// <param name="History">Objective values per step (steps × N), measured on the transformed batch of that step.</param>
/// <param name="Start">Objective values of the start image (untransformed).</param>
/// <param name="Final">Objective values of the final image (untransformed).</param>
public sealed record SynthesisResult(Tensor Images, float[,] History, float[] Start, float[] Final);

/// <summary>The optimisation loop of activation maximisation, usable without a pipeline.</summary>
public static class Synthesizer
{
    /// <summary>Optimises one image per objective: maximise objective_i(model(Normalize(T(I_i)))) − regularisers(I_i).</summary>
    public static SynthesisResult Optimize(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, ActivationMaxOptions o, int seed,
        Action<int>? onStep = null, CancellationToken cancel = default)
    {
        int n = objectives.Count;
        long h = o.Size is { Length: 2 } s ? s[0] : input.Height, w = o.Size is { Length: 2 } s2 ? s2[1] : input.Width;
        var gen = new Generator((ulong)(uint)seed);
        using var param = new Parameterization(o.Parameterization, n, input.Channels, h, w, o.Decorrelate, o.Range);
        var p = TensorAccounting.NewParameter(o.InitSd > 0 ? param.Initial(gen, o.InitSd) : zeros(param.ParameterShape));
        using var opt = o.Optimizer == OptimizerKind.Adam
            ? (optim.Optimizer)optim.Adam([p], lr: o.LearningRate)
            : optim.SGD([p], o.LearningRate);
        var layers = objectives.SelectMany(x => x.Layers).Distinct().ToList();
        var history = new float[o.Steps, n];
        var rows = arange(n, dtype: ScalarType.Int64);
        bool clip = o.NormClip > 0 || o.ContributionClip > 0;
        // Without transforms, step 0 scores exactly the untransformed start image: its values are the start values, and
        // the extra forward pass is saved.
        bool plain = o.Pad <= 0 && o.Jitter <= 0 && (o.Scales ?? []).All(v => v == 1) && (o.Rotations ?? []).All(v => v % 360 == 0);
        float[]? start = null;
        if (!plain || o.Steps == 0)
            using (var _ = no_grad()) start = Evaluate(model, input, objectives, layers, FitToModel(param.Image(p), input, o));

        for (int step = 0; step < o.Steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var img = param.Image(p);
            if (o.ContributionClip > 0) img.retain_grad();
            var x = img;
            x = Transforms.Pad(x, o.Pad, 0.5);
            if (o.Jitter > 0) x = Transforms.Jitter(x, Transforms.UniformInt(gen, -o.Jitter, o.Jitter), Transforms.UniformInt(gen, -o.Jitter, o.Jitter));
            double sc = o.Scales is { Length: > 0 } ? Transforms.Choose(gen, o.Scales) : 1, rot = o.Rotations is { Length: > 0 } ? Transforms.Choose(gen, o.Rotations) : 0;
            x = Transforms.Affine(x, sc, rot);
            x = FitToModel(x, input, o);
            var values = Scores(model, input, objectives, layers, x, rows);
            var loss = -values.sum();
            if (o.L2 > 0) loss = loss + (float)o.L2 * (img - (float)o.L2Center).pow(2).sum();
            if (o.Tv > 0) loss = loss + (float)o.Tv * TotalVariation(img).sum();
            loss.backward();
            opt.step();
            var v = values.detach().ToArray<float>();
            for (int i = 0; i < n; i++) history[step, i] = v[i];
            start ??= v;
            using (var _ = no_grad())
            {
                if (o.BlurEvery > 0 && (step + 1) % o.BlurEvery == 0) param.Blur(p, o.BlurSigma);
                if (clip)
                {
                    var centred = img.detach() - 0.5f;
                    if (o.NormClip > 0) ZeroBelowPercentile(p, centred.pow(2).sum([1]).sqrt(), o.NormClip);
                    if (o.ContributionClip > 0 && img.grad is { } g) ZeroBelowPercentile(p, (centred * -g).sum([1]).abs(), o.ContributionClip);
                }
            }
            onStep?.Invoke(step);
        }
        using var __ = no_grad();
        var final = param.Image(p).detach();
        var finalValues = Evaluate(model, input, objectives, layers, FitToModel(final, input, o));
        return new SynthesisResult(final.clone(), history, start!, finalValues);
    }

    /// <summary>Bilinear resize to the model's input size when <see cref="ActivationMaxOptions.ResizeToModel"/> is set.</summary>
    public static Tensor FitToModel(Tensor x, InputSpec input, ActivationMaxOptions o) =>
        o.ResizeToModel && (x.shape[2] != input.Height || x.shape[3] != input.Width) ? Display.Resize(x, input.Height, input.Width) : x;

    /// <summary>Σ over pixels of |∂y| + |∂x| per image (anisotropic L1 total variation), shape N.</summary>
    public static Tensor TotalVariation(Tensor img)
    {
        var dy = (img[.., .., 1.., ..] - img[.., .., ..^1, ..]).abs().sum([1, 2, 3]);
        var dx = (img[.., .., .., 1..] - img[.., .., .., ..^1]).abs().sum([1, 2, 3]);
        return dy + dx;
    }

    /// <summary>Yosinski's clipping: pixels whose <paramref name="score"/> (N×H×W) is below the per-image percentile get parameter 0 (grey).</summary>
    static void ZeroBelowPercentile(Tensor p, Tensor score, double percentile)
    {
        long n = score.shape[0];
        var flat = score.reshape(n, -1);
        long k = (long)Math.Floor(percentile / 100.0 * (flat.shape[1] - 1));
        var (sorted, _) = flat.sort(1);
        var thr = sorted[.., k].view(n, 1, 1);
        var keep = (score >= thr).unsqueeze(1).to(p.dtype);          // N×1×H×W
        p.mul_(keep);
    }

    /// <summary>Objective i on row i of the batch (shape N); gradients flow to <paramref name="pixels"/>.</summary>
    public static Tensor Scores(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, List<string> layers, Tensor pixels, Tensor rows)
    {
        using var cap = model.Capture(layers, forGradients: true);
        var output = model.Forward(input.Normalize(pixels));
        if (rows.shape[0] == output.shape[0] && objectives.All(ob => ob is ClassLogit { Index: >= 0 } c && c.Index < output.shape[1]))
        {
            // Class objectives only (the common case): row i's logit of class i in one gather, not N objectives × N rows.
            var classes = tensor(objectives.Select(ob => (long)((ClassLogit)ob).Index).ToArray());
            return output.reshape(output.shape[0], -1).gather(1, classes.index_select(0, rows).unsqueeze(1)).squeeze(1);
        }
        if (rows.shape[0] == output.shape[0] && objectives.Count > 0 && objectives[0] is DirectionNeuron d0
            && objectives.All(ob => ob is DirectionNeuron d && d.LayerName == d0.LayerName && d.CossimPower == d0.CossimPower && d.Centre == d0.Centre && d.Vector.Length == d0.Vector.Length))
        {
            // Atlas icons: one direction per row, all rows at once (N×C directions) instead of N objectives × N rows.
            var a = cap[d0.LayerName];
            if (a.dim() < 2 || a.shape[1] != d0.Vector.Length)
                throw new LoupeException($"an atlas direction has {d0.Vector.Length} values but layer '{d0.LayerName}' has {(a.dim() < 2 ? 1 : a.shape[1])} channels");
            var v = tensor(objectives.SelectMany(ob => ((DirectionNeuron)ob).Vector).ToArray(), [objectives.Count, d0.Vector.Length]).to(a.dtype).to(a.device);
            return DirectionNeuron.Values(a, v.index_select(0, rows), d0.CossimPower, d0.Centre);
        }
        var oi = new ObjectiveInput(output, l => cap[l]);
        var cols = objectives.Select(ob =>
        {
            var v = ob.Evaluate(oi);
            return v.dim() == 0 ? v.expand(pixels.shape[0]) : v;
        }).ToList();
        var all = stack(cols, 1);                                        // N × objectives
        return all.gather(1, rows.unsqueeze(1)).squeeze(1);
    }

    static float[] Evaluate(IModel model, InputSpec input, IReadOnlyList<Objective> objectives, List<string> layers, Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var rows = arange(objectives.Count, dtype: ScalarType.Int64);
        return Scores(model, input, objectives, layers, pixels, rows).detach().ToArray<float>();
    }
}

/// <summary>Activation maximisation (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017):
/// gradient ascent on a synthetic image I to maximise an objective S (class logit, channel mean, neuron, direction, or a
/// weighted combination) minus regularisers, through a parameterisation (pixels or Fourier with decorrelated colour) and
/// random transforms (jitter, scale, rotation, padding). One image per objective, optimised together in one batch;
/// seeded from the step seed, bit-for-bit reproducible.</summary>
public sealed class ActivationMax : Analysis<ActivationMaxOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements =>
        new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations, UsesTarget: false, UsesData: false);

    /// <summary>The objective texts of the options (objective, objectives, class), in order; the direction is added separately.</summary>
    public static List<string> Texts(ActivationMaxOptions o)
    {
        var list = new List<string>();
        if (o.Objective is { } one) list.Add(one);
        if (o.Objectives is { } many) list.AddRange(many);
        if (o.Class is { } c) list.Add(c.All(char.IsDigit) || c == "*" ? $"class:{c}" : $"class:'{c}'");
        return list;
    }

    /// <summary>Parses every objective and expands <c>class:*</c>; throws <see cref="LoupeException"/> on the first error.</summary>
    public static List<(string Text, Objective Objective)> Build(ActivationMaxOptions o, IReadOnlyList<string> labels, long outputs)
    {
        var result = new List<(string, Objective)>();
        foreach (var text in Texts(o))
        {
            if (text.Replace(" ", "") is "class:*")
            {
                for (int k = 0; k < outputs; k++)
                    result.Add((k < labels.Count ? $"class:{labels[k]}" : $"class:{k}", new ClassLogit(k < labels.Count ? labels[k] : k.ToString(CultureInfo.InvariantCulture), k)));
                continue;
            }
            var ob = ObjectiveBinder.ResolveClasses(ObjectiveParser.Parse(text), labels);
            result.Add((text, ob));
        }
        if (o.Direction is { } d)
        {
            var v = Npy.Read(d.Vector);
            result.Add(($"direction:{d.Layer}", new Direction(d.Layer, v.Data, d.Vector)));
        }
        return result;
    }

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ActivationMaxOptions o, AnalysisValidationContext context)
    {
        var errors = new List<string>();
        var texts = Texts(o);
        if (texts.Count == 0 && o.Direction is null) { errors.Add("give an 'objective', 'objectives', 'class' or 'direction'"); return errors; }
        if (o.Size is { } size && (size.Length != 2 || size.Any(v => v < 1 || v > 8192)))
            errors.Add($"option 'size' must be [height, width] with values in 1..8192, got [{string.Join(", ", size)}]");
        if ((o.NormClip > 0 || o.ContributionClip > 0) && o.Parameterization != ParameterizationKind.Pixels)
            errors.Add("options 'norm_clip' and 'contribution_clip' act on pixels: set 'parameterization: pixels'");
        if (o.Scales is { } sc && sc.Any(v => !(v > 0))) errors.Add("option 'scales' must hold positive factors");
        var parsed = new List<(string Text, Objective Ob)>();
        foreach (var t in texts)
        {
            if (t.Replace(" ", "") is "class:*") continue;
            try { parsed.Add((t, ObjectiveParser.Parse(t))); }
            catch (LoupeException e) { errors.Add(e.Message); }
        }
        Direction? dir = null;
        if (o.Direction is { Vector.Length: > 0 } d && File.Exists(d.Vector))
        {
            try { dir = new Direction(d.Layer, Npy.Read(d.Vector).Data, d.Vector); parsed.Add(("direction", dir)); }
            catch (LoupeException e) { errors.Add("direction: " + e.Message); }
        }
        var layerNames = context.Layers.Select(l => l.Name).ToHashSet();
        var probe = parsed.SelectMany(p => p.Ob.Layers).Where(layerNames.Contains).Distinct().ToList();
        long h = o.Size is { Length: 2 } s1 && !o.ResizeToModel ? s1[0] : context.Model.DefaultInput.Height, w = o.Size is { Length: 2 } s2 && !o.ResizeToModel ? s2[1] : context.Model.DefaultInput.Width;
        var (outputs, shapes, probeError) = Probe(context.Model, probe, h, w);
        if (probeError is not null) { errors.Add($"the model does not run on a {h}×{w} image: {probeError}{(o.ResizeToModel ? "" : "; set 'resize_to_model: true' to feed it the image resized to its input size")}"); return errors; }
        foreach (var (t, ob) in parsed)
            errors.AddRange(ObjectiveBinder.Check(ob, t, layerNames, shapes, outputs, context.Model.DefaultLabels));
        return errors;
    }

    /// <summary>Runs the model once on a grey image of <paramref name="h"/>×<paramref name="w"/> and returns the output size and layer shapes.</summary>
    public static (long Outputs, Dictionary<string, long[]> Shapes, string? Error) Probe(IModel model, IReadOnlyCollection<string> layers, long h, long w)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        try
        {
            var spec = model.DefaultInput;
            using var cap = model.Capture(layers, forGradients: false);
            var outp = model.Forward(spec.Normalize(full(new long[] { 1, spec.Channels, h, w }, 0.5f)));
            var shapes = new Dictionary<string, long[]>();
            foreach (var l in layers) if (cap.TryGet(l, out var a)) shapes[l] = a.shape;
            return (outp.dim() >= 2 ? outp.shape[1] : outp.numel(), shapes, null);
        }
        catch (Exception e) when (e is not OutOfMemoryException) { return (0, [], e.Message.Split('\n')[0]); }
    }

    /// <inheritdoc/>
    public override void Run(ActivationMaxOptions o, IAnalysisContext ctx)
    {
        long h = o.Size is { Length: 2 } s1 ? s1[0] : ctx.Input.Height, w = o.Size is { Length: 2 } s2 ? s2[1] : ctx.Input.Width;
        var (outputs, _, err) = o.ResizeToModel ? Probe(ctx.Model, [], ctx.Input.Height, ctx.Input.Width) : Probe(ctx.Model, [], h, w);
        if (err is not null) throw new LoupeException($"the model does not run on a {h}×{w} image: {err}");
        var objectives = Build(o, ctx.Labels, outputs);
        int n = objectives.Count;
        var ids = objectives.Select((x, i) => $"{i:D2}-{Slug(x.Text)}").ToArray();
        var result = Synthesizer.Optimize(ctx.Model, ctx.Input, objectives.Select(x => x.Objective).ToList(), o, ctx.Seed,
            step => ctx.Progress((step + 1) / (double)o.Steps, $"step {step + 1}/{o.Steps}"), ctx.Cancellation);
        using var scope = NewDisposeScope();
        var imgs = result.Images;
        int factor = Display.UpscaleFactor((int)w, o.DisplaySize);
        var tiles = new List<RgbImage>();
        for (int i = 0; i < n; i++)
        {
            ctx.Output.Raw("image", ids[i], NdArray.FromTensor(imgs[i]));
            var tile = Display.Scale(Display.Image(imgs[i]), factor);
            tiles.Add(tile);
            ctx.Output.Display("image", ids[i], tile);
        }
        if (n > 1)
            ctx.Output.Display("grid", null, Figure.Sheet(tiles, Math.Min(n, 5),
                objectives.Select((x, i) => (string?)$"{x.Text}\nobjective {Display.Number(result.History[o.Steps - 1, i])}").ToList(),
                $"{ctx.StepId}: images that maximise each objective ({o.Steps} steps)"));
        var hist = new float[o.Steps * n];
        Buffer.BlockCopy(result.History, 0, hist, 0, hist.Length * 4);
        ctx.Output.Raw("objective", null, new NdArray(hist, [o.Steps, n]));
        ctx.Output.Figure("objective", null, () => Plot.Lines(result.History, objectives.Select(x => x.Text).ToArray(), "objective per step", 640, 400));

        // Predictions of the final images (untransformed) for the record.
        long[] top;
        using (no_grad()) top = ctx.Model.Forward(ctx.Input.Normalize(Synthesizer.FitToModel(imgs, ctx.Input, o))).reshape(n, -1).argmax(1).ToArray<long>();
        ctx.Output.Json("objectives", objectives.Select((x, i) => new
        {
            id = ids[i], objective = x.Text, parsed = x.Objective.ToString(), start = result.Start[i], final = result.Final[i],
            predicted = top[i], predicted_label = top[i] < ctx.Labels.Count ? ctx.Labels[(int)top[i]] : null,
        }).ToList());
        for (int i = 0; i < n; i++) ctx.Output.Metric($"{ids[i]}.final", result.Final[i]);
        for (int i = 0; i < n; i++)
            if (result.Start[i] == result.Final[i])
                ctx.Warn($"objective '{objectives[i].Text}' did not change: its gradient is zero at the start image (e.g. a ReLU channel that is off everywhere); use the layer before the ReLU or a larger init_sd");
    }

    /// <summary>File-name-safe form of an objective.</summary>
    public static string Slug(string text)
    {
        var sb = new StringBuilder();
        foreach (var c in text.ToLowerInvariant())
            sb.Append(char.IsAsciiLetterOrDigit(c) || c == '.' ? c : sb.Length > 0 && sb[^1] == '-' ? "" : "-");
        var s = sb.ToString().Trim('-', '.');
        return s.Length == 0 ? "objective" : s.Length > 48 ? s[..48].TrimEnd('-', '.') : s;
    }
}
