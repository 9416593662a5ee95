using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Concepts;

/// <summary>Options of <c>deep-feature-factorization</c>.</summary>
public sealed record FeatureFactorizationOptions : IReshapesLayers
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("layer whose activations are factorised (N×K×h×w, or tokens / channels-last through 'reshape'), e.g. layer4")]
    public string Layer { get; init; } = "";
    /// <summary>Layout of the layer.</summary>
    [Description("lay the layer out as N×C×h×w: auto (from its shape), none, nhwc (Swin/ConvNeXt channels-last), vit (drop the leading tokens that are not patches — class token, DeiT's distillation token, registers — of N×(k+h·w)×C), tokens (N×(h·w)×C) — pytorch-grad-cam's reshape_transform")]
    public LayerReshape Reshape { get; init; } = LayerReshape.Auto;
    /// <summary>Explicit token grid.</summary>
    [Description(IReshapesLayers.TokenGridDescription)]
    public int[]? TokenGrid { get; init; }
    /// <summary>Components.</summary>
    [Range(1, 64), Description("concepts per factorisation: pytorch-grad-cam's n_components (5 in its run_dff_on_image and dff(); its DeepFeatureFactorization call defaults to 16)")]
    public int Components { get; init; } = 5;
    /// <summary>Inputs factorised together.</summary>
    [Range(1, 4096), Description("consecutive inputs factorised together, sharing their concepts (pytorch-grad-cam factorises the batch it is given; run_dff_on_image one image); above 1 the step cannot run on shards")]
    public int Images { get; init; } = 1;
    /// <summary>Linear head run on the concepts.</summary>
    [Description("a linear layer (weight classes×K, e.g. fc) applied to each concept embedding — pytorch-grad-cam's computation_on_concepts; its softmax labels the concepts")]
    public string? Head { get; init; }
    /// <summary>Labels per concept.</summary>
    [Range(1, 20), Description("with head: the classes shown per concept (pytorch-grad-cam's top_k, default 2)")]
    public int Top { get; init; } = 2;
}

/// <summary>Deep Feature Factorization (Collins, Achanta &amp; Süsstrunk 2018), as pytorch-grad-cam's
/// DeepFeatureFactorization computes it: the activations of a group of inputs as K channels × (inputs·h·w) positions
/// (NaN → 0), each channel's minimum subtracted, factorised by scikit-learn's NMF with random start 0
/// (<see cref="CoordinateDescentNmf"/>): W (K×r) plus the minima are the concept embeddings, H (r × positions) the
/// explanations — per input r maps of h×w, each min-max scaled (x − min) / (max + 1e-7) and resized bilinearly to the
/// input. With <c>head</c>, the concepts (r×K) through that linear layer give r×classes scores (the library's concept
/// outputs), whose softmax names each concept. No target, no gradients.
/// Outputs per input <c>dff</c> (r×H×W), <c>dff-layer</c> (r×h×w), <c>concepts</c> (K×r, the group's), with a head
/// <c>concept-scores</c> (r×classes) and, for the step, <c>concept-labels.json</c>; figures: the concepts coloured over the input (each pixel
/// its strongest concept, brightness its scaled value, blended half and half as the library's
/// show_factorization_on_image) and each concept alone, captioned with its classes.</summary>
public sealed class FeatureFactorization : Analysis<FeatureFactorizationOptions>, IShardable
{
    const int GridRows = 8;

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(FeatureFactorizationOptions options, AnalysisValidationContext context)
    {
        foreach (var e in TokenLayout.Errors(options)) yield return e;
        foreach (var e in OptionRules.OnlyWith(options, options.Head is not null, "a 'head' (the classes shown per concept)", nameof(options.Top))) yield return e;
        if (options.Head is not { } head) yield break;
        if (!context.Capabilities.HasFlag(ModelCapabilities.Parameters))
            yield return "option 'head': this model backend cannot read a layer's weights";
        else if (ModelParameters.Read(context.Model, head + ".weight") is not { } w || w.dim() != 2)
            yield return $"option 'head': '{head}' has no 2-D weight (a linear layer classes×K, e.g. fc)";
    }

    /// <inheritdoc/>
    public string? Unshardable(object options) => ((FeatureFactorizationOptions)options).Images > 1
        ? "option 'images' above 1 factorises consecutive inputs together, which a shard does not see whole" : null;

    sealed record Pending(string Id, Tensor Pixels, float[] Activation);

    /// <inheritdoc/>
    public override void Run(FeatureFactorizationOptions options, IAnalysisContext ctx)
    {
        var group = new List<Pending>();
        var sheets = new List<(string Id, RgbImage Sheet)>();
        var named = new List<object>();
        long k = 0, h = 0, w = 0, height = 0, width = 0;
        try
        {
            foreach (var (batch, captured) in Explain.LayerBatches(ctx, options.Layer))
            {
                using var scope = NewDisposeScope();
                height = batch.Input.shape[2]; width = batch.Input.shape[3];
                var a = LayerReshapes.ToGrid(captured, options.Reshape, options.Layer, TokenLayout.Of(options, (height, width))).to(ScalarType.Float32).cpu().contiguous();
                (k, h, w) = (a.shape[1], a.shape[2], a.shape[3]);
                // The group's matrix, its transpose and the copies kept per input: ~4 float32 copies of K × images·h·w.
                if (16L * k * h * w * options.Images > ctx.MemoryBudgetBytes)
                    throw new LoupeException($"option 'images': {options.Images} inputs of {k}×{h}×{w} activations need ~{16L * k * h * w * options.Images >> 20} MiB, above the step's memory budget ({ctx.MemoryBudgetBytes >> 20} MiB); factorise fewer inputs together or raise settings.memory_budget_mb");
                for (int i = 0; i < batch.Ids.Length; i++)
                {
                    group.Add(new(batch.Ids[i], batch.Pixels[i].detach().cpu().MoveToOuterDisposeScope(), a[i].ToArray<float>()));
                    if (group.Count == options.Images) Flush();
                }
            }
            if (group.Count > 0) Flush();
        }
        finally { foreach (var p in group) p.Pixels.Dispose(); }
        var title = Title(ctx.StepId, options);
        ctx.Output.Json("dff", new { layer = options.Layer, components = options.Components, images = options.Images, title });
        if (options.Head is not null) ctx.Output.Json("concept-labels", new { head = options.Head, inputs = named });
        if (sheets.Count > 0) ctx.Output.Display("dff-grid", null, Grid(sheets, title));

        void Flush()
        {
            try { Factorise(options, ctx, group, k, h, w, height, width, sheets, named); }
            finally
            {
                foreach (var p in group) p.Pixels.Dispose();
                group.Clear();
            }
        }
    }

    static string Title(string step, FeatureFactorizationOptions o) =>
        $"{step}: deep feature factorisation of {o.Layer} ({o.Components} concepts{(o.Images > 1 ? $" shared by {o.Images} inputs" : " per input")}; each pixel its strongest concept)";

    static RgbImage Grid(IReadOnlyList<(string Id, RgbImage Sheet)> sheets, string title) =>
        Figure.Table(sheets.Select(s => (IReadOnlyList<RgbImage?>)[s.Sheet]).ToList(), null, sheets.Select(s => s.Id).ToList(), title);

    static void Factorise(FeatureFactorizationOptions o, IAnalysisContext ctx, List<Pending> group, long k, long h, long w, long height, long width,
        List<(string Id, RgbImage Sheet)> sheets, List<object> named)
    {
        using var scope = NewDisposeScope();
        int b = group.Count, r = o.Components, hw = (int)(h * w), cols = b * hw;
        // Channels × (input, y, x), NaN → 0, each channel's minimum subtracted.
        var x = new float[k * cols];
        var offset = new float[k];
        for (int c = 0; c < k; c++)
        {
            float min = float.PositiveInfinity;
            for (int i = 0; i < b; i++)
                for (int p = 0; p < hw; p++)
                {
                    float v = group[i].Activation[c * hw + p];
                    if (float.IsNaN(v)) v = 0;
                    x[c * cols + i * hw + p] = v;
                    min = Math.Min(min, v);
                }
            offset[c] = min;
            for (int j = 0; j < cols; j++) x[c * cols + j] -= min;
        }
        var (wm, hm, _) = CoordinateDescentNmf.Fit(x, (int)k, cols, r);
        var concepts = new float[k * r];
        for (int c = 0; c < k; c++)
            for (int j = 0; j < r; j++) concepts[c * r + j] = wm[c * r + j] + offset[c];
        var conceptTensor = tensor(concepts, [k, r]);
        Tensor? scores = null;
        if (o.Head is { } head)
        {
            var weight = ModelParameters.Read(ctx.Model, head + ".weight")!.detach().to(ScalarType.Float32).cpu();
            if (weight.shape[1] != k)
                throw new LoupeException($"head '{head}' has {weight.shape[1]} inputs but layer '{o.Layer}' has {k} channels");
            var bias = ModelParameters.Read(ctx.Model, head + ".bias")?.detach().to(ScalarType.Float32).cpu();
            scores = conceptTensor.t().MatMul(weight.t());
            if (bias is not null) scores = scores + bias;
        }
        var labels = scores is null ? null : Labels(ctx, nn.functional.softmax(scores, 1), o.Top);
        var colours = Colours(r);
        var layers = tensor(hm, [r, b, h, w]).transpose(0, 1).contiguous();    // b×r×h×w
        for (int i = 0; i < b; i++)
        {
            var id = group[i].Id;
            var layer = layers[i];
            var flat = layer.reshape(r, -1);
            var shifted = flat - flat.amin([1], keepdim: true);
            var scaled = (shifted / (1e-7f + shifted.amax([1], keepdim: true))).view(r, h, w);
            var maps = Display.Resize(scaled, height, width);                   // r×H×W
            ctx.Output.Raw("dff", id, NdArray.FromTensor(maps));
            ctx.Output.Raw("dff-layer", id, NdArray.FromTensor(layer));
            ctx.Output.Raw("concepts", id, NdArray.FromTensor(conceptTensor));
            if (scores is not null)
            {
                ctx.Output.Raw("concept-scores", id, NdArray.FromTensor(scores));
                named.Add(new
                {
                    id,
                    concepts = labels!.Select((l, j) => new
                    {
                        concept = j,
                        classes = l.Select(c => new { index = c.Class, name = c.Name, probability = c.Probability }).ToArray(),
                    }).ToArray(),
                });
            }
            var sheet = Sheet(group[i].Pixels, maps, colours, labels);
            ctx.Output.Display("dff", id, sheet);
            if (sheets.Count < GridRows) sheets.Add((id, sheet));
        }
    }

    /// <summary>The <paramref name="top"/> classes of each concept by softmax probability (ties: the lower class).</summary>
    static List<(long Class, string Name, double Probability)[]> Labels(IAnalysisContext ctx, Tensor probabilities, int top)
    {
        var p = probabilities.to(ScalarType.Float64).ToArray<double>();
        long classes = probabilities.shape[1];
        string Name(long c) => c < ctx.Labels.Count ? ctx.Labels[(int)c] : $"class {c}";
        return Enumerable.Range(0, (int)probabilities.shape[0]).Select(j =>
            Enumerable.Range(0, (int)classes).OrderByDescending(c => p[j * classes + c]).ThenBy(c => c).Take(top)
                .Select(c => ((long)c, Name(c), p[j * classes + c])).ToArray()).ToList();
    }

    /// <summary>The concepts over the input (each pixel its strongest concept's colour at the brightness of that
    /// concept's scaled value, blended half and half) and each concept alone, captioned.</summary>
    static RgbImage Sheet(Tensor pixels, Tensor maps, float[][] colours, List<(long Class, string Name, double Probability)[]>? labels)
    {
        using var scope = NewDisposeScope();
        int r = (int)maps.shape[0];
        var rgb = pixels.shape[0] == 1 ? pixels.expand(3, -1, -1) : pixels;
        var palette = tensor(colours.SelectMany(c => c).ToArray(), [r, 3]);
        var strongest = maps.argmax(0);                                            // H×W
        var value = maps.gather(0, strongest.unsqueeze(0)).squeeze(0);
        var all = palette.index_select(0, strongest.flatten()).t().reshape(3, maps.shape[1], maps.shape[2]) * value;
        var tiles = new List<RgbImage> { Tile(0.5f * rgb + 0.5f * all) };
        var captions = new List<string?> { "all concepts" };
        for (int j = 0; j < r; j++)
        {
            tiles.Add(Tile(0.5f * rgb + 0.5f * palette[j].view(3, 1, 1) * maps[j]));
            captions.Add(labels is null ? $"concept {j}"
                : $"concept {j}: " + string.Join(", ", labels[j].Select(l => $"{l.Name} {l.Probability:0.00}")));
        }
        return Figure.Sheet(tiles, tiles.Count, captions);
    }

    static RgbImage Tile(Tensor rgb)
    {
        var image = Display.Image(rgb.clamp(0, 1));
        return Display.Scale(image, Display.UpscaleFactor(Math.Max(image.Width, image.Height), 96));
    }

    /// <summary>matplotlib's gist_rainbow at j / r (its 256-entry table), as the library colours the concepts.</summary>
    static float[][] Colours(int r)
    {
        (double X, double R, double G, double B)[] stops = [(0, 1, 0, 0.16), (0.03, 1, 0, 0), (0.215, 1, 1, 0), (0.4, 0, 1, 0),
            (0.586, 0, 1, 1), (0.77, 0, 0, 1), (0.954, 1, 0, 1), (1, 1, 0, 0.75)];
        return Enumerable.Range(0, r).Select(j =>
        {
            double at = Math.Min(255, (int)(j / (double)r * 256)) / 255.0;
            int s = 0;
            while (s < stops.Length - 2 && at > stops[s + 1].X) s++;
            var (a, z) = (stops[s], stops[s + 1]);
            double f = (at - a.X) / (z.X - a.X);
            return new[] { (float)(a.R + f * (z.R - a.R)), (float)(a.G + f * (z.G - a.G)), (float)(a.B + f * (z.B - a.B)) };
        }).ToArray();
    }

    /// <inheritdoc/>
    public void Merge(IShardMerge merge)
    {
        var info = merge.Json("dff");
        if (info.Count > 0) merge.Output.Json("dff", info[0]);
        if (merge.Has("concept-labels", "json")) merge.Concat("concept-labels", "inputs");
        var entries = merge.InputDisplayEntries("dff", GridRows);
        if (entries.Count == 0) return;
        var title = info.Count > 0 ? info[0]["title"]?.GetValue<string>() : null;
        merge.Output.Display("dff-grid", null, Grid(entries.Select(e => (e.Input, e.Image)).ToList(), title ?? $"{merge.StepId}: deep feature factorisation"));
    }
}
