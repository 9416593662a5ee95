using System.Globalization;
using System.Text;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>Activation maximisation (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017):
/// gradient ascent on a synthetic image I to maximise an objective S (class logit, channel mean, neuron, direction, or a
/// weighted combination) minus regularisers, through a parameterisation (pixels or Fourier with decorrelated colour) and
/// random transforms (jitter, scale, rotation, padding). One image per objective, optimised together in one batch;
/// seeded from the step seed, bit-for-bit reproducible.</summary>
public sealed class ActivationMax : Analysis<ActivationMaxOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => [];

    /// <summary><c>&lt;image id&gt;.final</c> per image, <c>&lt;objective&gt;.gram_similarity</c> per objective with a
    /// <c>diversity_layer</c> and batch &gt; 1, <c>misalignment</c> with an <c>alignment_layer</c> and two or more
    /// images; null with <c>class: "*"</c> (its objectives are the model's classes, named once it has run).</summary>
    public IReadOnlyList<string>? MetricNamesFor(object options, IModel model)
    {
        var o = (ActivationMaxOptions)options;
        var texts = Texts(o);
        if (texts.Any(IsEveryClass)) return null;
        if (o.Direction is { } d) texts.Add(DirectionText(d));
        int batch = Math.Max(1, o.Batch);
        var (groups, ids) = ImageNames(texts, batch);
        var names = ids.Select(i => i + ".final").ToList();
        if (batch > 1 && o.DiversityLayer is not null) names.AddRange(groups.Select(g => g + ".gram_similarity"));
        if (ids.Length > 1 && o.AlignmentLayer is not null) names.Add("misalignment");
        return names;
    }

    static bool IsEveryClass(string text) => text.Replace(" ", "") is "class:*";
    static string DirectionText(DirectionOptions d) => $"direction:{d.Layer}";

    /// <summary>Each objective's name (<c>NN-slug</c>) and each image's id: the objective's name, or with batch &gt; 1 the
    /// name and the image's place in its batch (image r shows objective r / batch).</summary>
    static (string[] Groups, string[] Ids) ImageNames(IReadOnlyList<string> texts, int batch)
    {
        var groups = texts.Select((x, i) => $"{i:D2}-{Slug(x)}").ToArray();
        return (groups, Enumerable.Range(0, groups.Length * batch).Select(r => batch == 1 ? groups[r] : $"{groups[r / batch]}-{r % batch}").ToArray());
    }

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
            if (IsEveryClass(text))
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
            result.Add((DirectionText(d), new Direction(d.Layer, v.Data, d.Vector, d.Similarity == DirectionSimilarity.Cosine, d.Position == DirectionPosition.Center)));
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
        if (o.BlurEvery > 0 && o.Parameterization == ParameterizationKind.Cppn)
            errors.Add("option 'blur_every' blurs pixels or Fourier coefficients; a cppn's image is a function of its weights: leave it out (or use 'tv')");
        if (o.Scales is { } sc && sc.Any(v => !(v > 0))) errors.Add("option 'scales' must hold positive factors");
        bool cppn = o.Parameterization == ParameterizationKind.Cppn;
        errors.AddRange(OptionRules.OnlyWith(o, cppn, "parameterization: cppn", nameof(o.CppnChannels), nameof(o.CppnLayers), nameof(o.CppnNormalize)));
        errors.AddRange(OptionRules.OnlyWith(o, !cppn, "parameterization: pixels or fft (a cppn's image is a function of its weights, initialised its own way)", nameof(o.Decorrelate), nameof(o.Range), nameof(o.InitSd)));
        errors.AddRange(OptionRules.OnlyWith(o, o.BlurEvery > 0, "blur_every above 0", nameof(o.BlurSigma)));
        errors.AddRange(OptionRules.OnlyWith(o, o.L2 > 0, "l2 above 0", nameof(o.L2Center)));
        if (o.Snapshots is { } snapAt && (snapAt.Any(k => k < 1 || k > o.Steps) || snapAt.Distinct().Count() != snapAt.Length))
            errors.Add($"option 'snapshots' must list distinct steps in 1..{o.Steps}, got [{string.Join(", ", snapAt)}]");
        if (o.Diversity > 0 && o.Batch < 2)
            errors.Add("option 'diversity' compares the images of one objective: set 'batch' to 2 or more (Lucent's examples optimise 4)");
        if (o.Diversity > 0 && o.DiversityLayer is null)
            errors.Add("option 'diversity' needs 'diversity_layer', the layer whose channel Gram matrices are compared");
        if (o.Alignment > 0 && o.AlignmentLayer is null)
            errors.Add("option 'alignment' needs 'alignment_layer', the layer at which neighbouring images are compared");
        if (o.Alignment > 0 && (texts.Count + (o.Direction is null ? 0 : 1)) * o.Batch < 2 && !texts.Any(t => t.Replace(" ", "") is "class:*"))
            errors.Add("option 'alignment' compares neighbouring images: give two or more objectives (or 'batch' ≥ 2)");
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
        if (o.DiversityLayer is { } dl && layerNames.Contains(dl))
        {
            var (_, dShapes, _) = Probe(context.Model, [dl], h, w);
            if (dShapes.TryGetValue(dl, out var ds) && ds.Length < 3)
                errors.Add($"option 'diversity_layer': layer '{dl}' has shape ({string.Join("×", ds)}); its Gram matrices need channels and positions (N×C×…)");
        }
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
        int batch = Math.Max(1, o.Batch), n = objectives.Count * batch;
        var (groups, ids) = ImageNames(objectives.Select(x => x.Text).ToList(), batch);
        var texts = Enumerable.Range(0, n).Select(r => objectives[r / batch].Text + (batch == 1 ? "" : $" #{r % batch + 1}")).ToArray();
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
            ctx.Output.Display("grid", null, Figure.Sheet(tiles, batch > 1 ? batch : Math.Min(n, 5),
                texts.Select((t, i) => (string?)$"{t}\nobjective {Display.Number(result.History[o.Steps - 1, i])}").ToList(),
                $"{ctx.StepId}: images that maximise each objective ({o.Steps} steps{(batch > 1 && o.Diversity > 0 ? $", diversity {Display.Number(o.Diversity)}" : "")})"));
        if (result.Snapshots is { } snaps)
        {
            // Each image at each snapshot and at the end, one row per image (Lucent's render_vis thresholds).
            var progress = new List<RgbImage>();
            var captions = new List<string?>();
            for (int i = 0; i < n; i++)
            {
                foreach (var (at, images) in snaps)
                {
                    var snap = Display.Scale(Display.Image(images[i]), factor);
                    ctx.Output.Raw($"image-step{at}", ids[i], NdArray.FromTensor(images[i]));
                    ctx.Output.Display($"image-step{at}", ids[i], snap);
                    progress.Add(snap);
                    captions.Add($"{texts[i]}\nstep {at}");
                }
                progress.Add(tiles[i]);
                captions.Add($"{texts[i]}\nstep {o.Steps} (final)");
            }
            ctx.Output.Display("progress", null, Figure.Sheet(progress, snaps.Count + 1, captions, $"{ctx.StepId}: the images during the optimisation"));
        }
        var hist = new float[o.Steps * n];
        Buffer.BlockCopy(result.History, 0, hist, 0, hist.Length * 4);
        ctx.Output.Raw("objective", null, new NdArray(hist, [o.Steps, n]));
        ctx.Output.Figure("objective", null, () => Plot.Lines(result.History, texts, "objective per step", 640, 400));

        // Predictions of the final images (untransformed) for the record.
        long[] top;
        using (no_grad()) top = ctx.Model.Forward(ctx.Input.Normalize(Synthesizer.FitToModel(imgs, ctx.Input, o))).reshape(n, -1).argmax(1).ToArray<long>();
        ctx.Output.Json("objectives", Enumerable.Range(0, n).Select(i => new
        {
            id = ids[i], objective = objectives[i / batch].Text, image = batch > 1 ? i % batch : (int?)null, parsed = objectives[i / batch].Objective.ToString(),
            start = result.Start[i], final = result.Final[i], predicted = top[i], predicted_label = top[i] < ctx.Labels.Count ? ctx.Labels[(int)top[i]] : null,
            gram_similarity = result.Similarity?[i / batch],
        }).ToList());
        for (int i = 0; i < n; i++) ctx.Output.Metric($"{ids[i]}.final", result.Final[i]);
        if (result.Similarity is { } similarity)
            for (int g = 0; g < groups.Length; g++) ctx.Output.Metric($"{groups[g]}.gram_similarity", similarity[g]);
        if (result.Misalignment is { } misalignment) ctx.Output.Metric("misalignment", misalignment);
        for (int i = 0; i < n; i++)
            if (result.Start[i] == result.Final[i])
                ctx.Warn($"objective '{texts[i]}' did not change: its gradient is zero at the start image (e.g. a ReLU channel that is off everywhere); use the layer before the ReLU or a larger init_sd");
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
