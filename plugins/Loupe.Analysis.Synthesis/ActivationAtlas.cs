using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Synthesis;

/// <summary>Activation atlas (Carter, Armstrong, Schubert, Johnson and Olah, <i>Activation Atlas</i>, Distill 2019): one
/// activation vector per input of a layer (at a random position, or averaged), laid out in 2-D by Barnes-Hut t-SNE, a
/// grid over the layout, each cell with enough vectors averaged and rendered by activation maximisation of the
/// direction objective Carter uses (<see cref="DirectionNeuron"/>), all icons in one batch (or batches within the
/// memory budget). The vectors come from the run's shared layer pass; a second pass over the data predicts the sampled
/// inputs' classes (classifiers only). Outputs <c>atlas.png</c>, <c>atlas-classes.png</c>, <c>cells.json</c>,
/// <c>cells.npy</c> (K×C means), <c>icons.npy</c>, <c>vectors.npy</c>, <c>coordinates.npy</c> (t-SNE), <c>layout.npy</c>
/// (normalised to [0,1]²), <c>sample.json</c> and <c>points2d.json</c> for the report's scatter.</summary>
public sealed class ActivationAtlas : Analysis<ActivationAtlasOptions>, IPlansLayerPasses, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["kl_divergence", "vectors", "cells", "objective_gain_mean"];

    /// <inheritdoc/>
    /// <remarks>objective_gain_mean only when the cells' icons are optimised (steps &gt; 0).</remarks>
    public IReadOnlyList<string> MetricNamesFor(object options, IModel model) =>
        options is ActivationAtlasOptions { Steps: > 0 } ? MetricNames : ["kl_divergence", "vectors", "cells"];

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements =>
        new(ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <summary>The shared dataset pass that keeps the sample (its key names everything the sample depends on).</summary>
    public static LayerPass Pass(ActivationAtlasOptions o) =>
        new(o.Layer, $"loupe.atlas.sample:{o.Layer}:{o.Position}:{o.Max}:{o.SampleSeed}", () => new AtlasSample(o.Position, o.Max, o.SampleSeed));

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [Pass((ActivationAtlasOptions)options)];

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ActivationAtlasOptions o, AnalysisValidationContext context)
    {
        if (o.Size is { } size && (size.Length != 2 || size.Any(v => v < 1 || v > 8192)))
            yield return $"option 'size' must be [height, width] with values in 1..8192, got [{string.Join(", ", size)}]";
        if (o.Scales is { } sc && sc.Any(v => !(v > 0))) yield return "option 'scales' must hold positive factors";
        if (o.Perplexity >= o.Max)
            yield return $"option 'perplexity' ({o.Perplexity}) must be smaller than 'max' ({o.Max}), the most vectors the atlas keeps";
        else if (context.InputCount is { } n && BarnesHutTsne.CheckPerplexity(Math.Min(n, o.Max), o.Perplexity) is { } msg)
            yield return "option 'perplexity': " + msg.Replace("number of inputs", "number of vectors");
        if (context.Layers.Any(l => l.Name == o.Layer))
        {
            var (_, shapes, error) = ActivationMax.Probe(context.Model, [o.Layer], context.Model.DefaultInput.Height, context.Model.DefaultInput.Width);
            if (error is null && shapes.TryGetValue(o.Layer, out var s) && s.Length is not (2 or 4))
                yield return $"layer '{o.Layer}' has output ({string.Join("×", s)}); the atlas needs N×C×H×W or N×C activations";
        }
    }

    /// <inheritdoc/>
    public override void Run(ActivationAtlasOptions o, IAnalysisContext ctx)
    {
        var sample = ((AtlasSample)ctx.RunLayerPass(Pass(o))).Result();
        int m = sample.Ids.Length, c = sample.Channels;
        if (BarnesHutTsne.CheckPerplexity(m, o.Perplexity) is { } msg) throw new LoupeException(msg.Replace("number of inputs", "number of vectors"));
        ctx.Output.Raw("vectors", null, new NdArray(sample.Vectors, [m, c]));
        ctx.Output.Json("sample", new { layer = o.Layer, position = o.Position.ToString().ToLowerInvariant(), ids = sample.Ids, rows = sample.Rows, y = sample.Y, x = sample.X });

        // Layout: t-SNE, then Carter's normalisation (outliers beyond the 1st/99th percentile + 10 % clipped, scaled to [0,1]²).
        double[] xy;
        using (var xt = tensor(sample.Vectors, [m, c]))
        {
            var r = BarnesHutTsne.Fit(xt, new TsneSettings { Perplexity = o.Perplexity, Iterations = o.TsneIterations, Seed = ctx.Seed },
                (it, kl) => ctx.Progress(0.8 + 0.08 * it / o.TsneIterations, $"t-SNE iteration {it}, KL {kl:F4}"), ctx.Cancellation);
            xy = r.Embedding;
            ctx.Output.Metric("kl_divergence", r.KlDivergence);
        }
        var xs = Enumerable.Range(0, m).Select(i => xy[2 * i]).ToArray();
        var ys = Enumerable.Range(0, m).Select(i => xy[2 * i + 1]).ToArray();
        ctx.Output.Raw("coordinates", null, new NdArray(xy.Select(v => (float)v).ToArray(), [m, 2]));
        var u = Normalize(xs, 1, 99, 0.1);
        var v = Normalize(ys, 1, 99, 0.1);
        ctx.Output.Raw("layout", null, new NdArray(Enumerable.Range(0, m).SelectMany(i => new[] { (float)u[i], (float)v[i] }).ToArray(), [m, 2]));
        string scatterTitle = $"t-SNE of {m} activation vectors of '{o.Layer}'";
        ctx.Output.Json(Points2D.ArtifactName, new Points2D(scatterTitle, "t-SNE 1", "t-SNE 2", sample.Ids,
            xs.Select(p => (float)p).ToArray(), ys.Select(p => (float)p).ToArray(), sample.Labels).Validated());

        var cells = Grid(u, v, sample.Vectors, c, o.Grid, o.MinCount);
        ctx.Output.Metric("vectors", m);
        ctx.Output.Metric("cells", cells.Count);
        if (cells.Count == 0)
            throw new LoupeException($"no cell of the {o.Grid}×{o.Grid} grid holds {o.MinCount} or more of the {m} vectors; lower 'grid' or 'min_count', or raise 'max'");
        ctx.Output.Raw("cells", null, new NdArray(cells.SelectMany(k => k.Mean.Select(x => (float)x)).ToArray(), [cells.Count, c]));

        var predicted = Predict(ctx, sample.Rows, $"loupe.atlas.predictions:{o.Max}:{o.SampleSeed}");
        var (icons, start, final) = Render(o, ctx, cells, sample.Spatial);
        try
        {
            WriteCells(o, ctx, sample, cells, predicted, start, final);
            Figures(o, ctx, sample, cells, predicted, icons);
        }
        finally { icons?.Dispose(); }
    }

    /// <summary>Carter's layout normalisation of one axis: values outside [P_low − margin·r, P_high + margin·r]
    /// (r = P_high − P_low; percentiles with linear interpolation, as numpy) are clipped, then the axis is scaled to
    /// [0, 1] by its minimum and maximum (all equal: 0.5).</summary>
    public static double[] Normalize(double[] values, double lowPercentile, double highPercentile, double margin)
    {
        var sorted = values.OrderBy(x => x).ToArray();
        double lo = Percentile(sorted, lowPercentile), hi = Percentile(sorted, highPercentile), r = hi - lo;
        lo -= margin * r; hi += margin * r;
        var clipped = values.Select(x => Math.Clamp(x, lo, hi)).ToArray();
        double min = clipped.Min(), max = clipped.Max();
        return max > min ? clipped.Select(x => (x - min) / (max - min)).ToArray() : clipped.Select(_ => 0.5).ToArray();
    }

    /// <summary>numpy's default percentile (linear interpolation between the closest ranks) of ascending values.</summary>
    public static double Percentile(double[] sorted, double q)
    {
        double pos = q / 100.0 * (sorted.Length - 1);
        int i = (int)Math.Floor(pos);
        return i + 1 < sorted.Length ? sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]) : sorted[^1];
    }

    /// <summary>Grids a layout in [0,1]² (<paramref name="u"/> across, <paramref name="v"/> up) into
    /// <paramref name="grid"/>² cells: column ⌊u·G⌋, row from the top G − 1 − ⌊v·G⌋ (both clamped to G − 1, so 1.0 falls
    /// in the last cell); cells with at least <paramref name="minCount"/> members are returned row by row, left to right,
    /// each with the mean of its members' vectors (rows of <paramref name="vectors"/>, <paramref name="d"/> values each).</summary>
    public static List<AtlasCell> Grid(double[] u, double[] v, float[] vectors, int d, int grid, int minCount)
    {
        var members = new Dictionary<(int Row, int Col), List<int>>();
        for (int i = 0; i < u.Length; i++)
        {
            int col = Math.Clamp((int)Math.Floor(u[i] * grid), 0, grid - 1);
            int row = grid - 1 - Math.Clamp((int)Math.Floor(v[i] * grid), 0, grid - 1);
            if (!members.TryGetValue((row, col), out var list)) members[(row, col)] = list = [];
            list.Add(i);
        }
        var cells = new List<AtlasCell>();
        foreach (var ((row, col), list) in members.OrderBy(kv => kv.Key.Row).ThenBy(kv => kv.Key.Col))
        {
            if (list.Count < minCount) continue;
            var mean = new double[d];
            foreach (var i in list)
                for (int j = 0; j < d; j++) mean[j] += vectors[(long)i * d + j];
            for (int j = 0; j < d; j++) mean[j] /= list.Count;
            cells.Add(new AtlasCell(row, col, [.. list], mean));
        }
        return cells;
    }

    sealed record Predictions(bool Classifier, Dictionary<long, long> Classes);

    /// <summary>The model's top-1 class of the sampled inputs (dataset rows), from one more pass over the data up to the
    /// last sampled row; null when the model's output is not one score per class. The sample's rows depend only on
    /// max and sample_seed, so atlas steps of the run that share them (other layers, positions) share this pass through
    /// the run cache under <paramref name="cacheKey"/>.</summary>
    static Dictionary<long, long>? Predict(IAnalysisContext ctx, long[] rows, string cacheKey)
    {
        if (ctx.RunCache.TryGetValue(cacheKey, out var cached) && cached is Predictions known && (!known.Classifier || rows.All(known.Classes.ContainsKey)))
        {
            ctx.Progress(0.9, "predictions of the sampled inputs reused from an earlier atlas step");
            return known.Classifier ? known.Classes : null;
        }
        var found = Read(ctx, rows);
        ctx.RunCache[cacheKey] = new Predictions(found is not null, found ?? []);
        return found;
    }

    static Dictionary<long, long>? Read(IAnalysisContext ctx, long[] rows)
    {
        var wanted = rows.ToHashSet();
        long last = rows.Max(), row = 0;
        var result = new Dictionary<long, long>();
        foreach (var batch in ctx.Batches())
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            int n = batch.Ids.Length;
            if (Enumerable.Range(0, n).Any(i => wanted.Contains(row + i)))
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                var output = ctx.Model.Forward(batch.Input);
                if (output.dim() != 2 || output.shape[1] < 2) return null;
                var top = output.argmax(1).ToArray<long>();
                for (int i = 0; i < n; i++) if (wanted.Contains(row + i)) result[row + i] = top[i];
            }
            row += n;
            ctx.Progress(0.88 + 0.02 * Math.Min(1, row / (double)(last + 1)), "predicting the sampled inputs");
            if (row > last) break;
        }
        return result;
    }

    /// <summary>One icon per cell by activation maximisation of <see cref="DirectionNeuron"/> along the cell's mean,
    /// in batches of <see cref="ActivationAtlasOptions.IconBatch"/> (default: what the memory budget holds); null icons when steps = 0.</summary>
    static (Tensor? Icons, float[] Start, float[] Final) Render(ActivationAtlasOptions o, IAnalysisContext ctx, List<AtlasCell> cells, bool spatial)
    {
        int k = cells.Count;
        if (o.Steps == 0) return (null, new float[k], new float[k]);
        var am = new ActivationMaxOptions
        {
            Parameterization = o.Parameterization, Decorrelate = o.Decorrelate, Size = o.Size, ResizeToModel = o.ResizeToModel,
            Steps = o.Steps, LearningRate = o.LearningRate, Jitter = o.Jitter, Scales = o.Scales, Rotations = o.Rotations, Pad = o.Pad,
        };
        long h = o.Size is { Length: 2 } s1 ? s1[0] : ctx.Input.Height, w = o.Size is { Length: 2 } s2 ? s2[1] : ctx.Input.Width;
        long fh = o.ResizeToModel ? ctx.Input.Height : h + 2 * o.Pad, fw = o.ResizeToModel ? ctx.Input.Width : w + 2 * o.Pad;
        int per = o.IconBatch ?? (int)Math.Clamp(ctx.MemoryBudgetBytes / Math.Max(1, 3 * Explain.BytesPerInput(ctx.Model, [1, ctx.Input.Channels, fh, fw])), 1, 4096);
        var objectives = cells.Select(cell => (Objective)new DirectionNeuron(o.Layer, cell.Mean.Select(x => (float)x).ToArray(), o.CossimPower, spatial && o.Position == AtlasPosition.Random)).ToList();
        var start = new float[k];
        var final = new float[k];
        var chunks = new List<Tensor>();
        int batches = (k + per - 1) / per, done = 0;
        try
        {
            for (int b = 0; b < batches; b++)
            {
                var part = objectives.Skip(b * per).Take(per).ToList();
                var r = Synthesizer.Optimize(ctx.Model, ctx.Input, part, am, unchecked(ctx.Seed + b),
                    step => ctx.Progress(0.9 + 0.09 * (done + part.Count * (step + 1) / (double)o.Steps) / k, $"icons {done + 1}-{done + part.Count} of {k}: step {step + 1}/{o.Steps}"),
                    ctx.Cancellation);
                r.Start.CopyTo(start, done);
                r.Final.CopyTo(final, done);
                chunks.Add(r.Images);
                done += part.Count;
            }
            return (chunks.Count == 1 ? chunks[0] : cat(chunks, 0), start, final);
        }
        finally
        {
            if (chunks.Count > 1) foreach (var t in chunks) t.Dispose();
        }
    }

    static void WriteCells(ActivationAtlasOptions o, IAnalysisContext ctx, AtlasSample.Sample sample, List<AtlasCell> cells,
        Dictionary<long, long>? predicted, float[] start, float[] final)
    {
        var list = cells.Select((cell, i) =>
        {
            var (cls, share) = Majority(cell, sample, predicted);
            return new
            {
                row = cell.Row, column = cell.Column, count = cell.Members.Length,
                predicted = cls, predicted_label = cls is long p && p < ctx.Labels.Count ? ctx.Labels[(int)p] : null, predicted_share = share,
                objective_start = o.Steps > 0 ? start[i] : (float?)null, objective_final = o.Steps > 0 ? final[i] : (float?)null,
                ids = cell.Members.Select(j => sample.Ids[j]).ToArray(),
            };
        }).ToList();
        ctx.Output.Json("cells", new { layer = o.Layer, grid = o.Grid, min_count = o.MinCount, vectors = sample.Ids.Length, cells = list });
        if (o.Steps > 0)
        {
            ctx.Output.Metric("objective_gain_mean", cells.Select((_, i) => (double)(final[i] - start[i])).Average());
            int worse = cells.Where((_, i) => final[i] <= start[i]).Count();
            if (worse > 0) ctx.Warn($"{worse} of {cells.Count} icons did not raise their objective; try more 'steps' or a larger 'learning_rate'");
        }
    }

    /// <summary>The most common predicted class among a cell's inputs (ties: the lower class) and its share.</summary>
    static (long? Class, double? Share) Majority(AtlasCell cell, AtlasSample.Sample sample, Dictionary<long, long>? predicted)
    {
        if (predicted is null) return (null, null);
        var classes = cell.Members.Where(j => predicted.ContainsKey(sample.Rows[j])).Select(j => predicted[sample.Rows[j]]).ToList();
        if (classes.Count == 0) return (null, null);
        var best = classes.GroupBy(x => x).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First();
        return (best.Key, best.Count() / (double)cell.Members.Length);
    }

    static void Figures(ActivationAtlasOptions o, IAnalysisContext ctx, AtlasSample.Sample sample, List<AtlasCell> cells,
        Dictionary<long, long>? predicted, Tensor? icons)
    {
        using var scope = NewDisposeScope();
        int size = o.IconSize, m = sample.Ids.Length, maxCount = cells.Max(k => k.Members.Length);
        var tiles = new List<RgbImage>();
        for (int i = 0; i < cells.Count; i++)
            tiles.Add(icons is null ? Shade(size, cells[i].Members.Length / (double)maxCount) : Display.Image(Display.Resize(icons[i].unsqueeze(0), size, size)[0]));
        if (icons is not null) ctx.Output.Raw("icons", null, NdArray.FromTensor(icons));

        var what = o.Position == AtlasPosition.Random && sample.Spatial ? "one vector each at a random position" : sample.Spatial ? "one vector each, averaged over positions" : "one vector each";
        var head = $"Activation atlas of '{o.Layer}': {m} inputs, {what}";
        var detail = icons is null
            ? $"t-SNE, {o.Grid}×{o.Grid} grid, {cells.Count} cells with ≥ {o.MinCount} vectors (count under each; no icons: steps 0)"
            : $"t-SNE, {o.Grid}×{o.Grid} grid, {cells.Count} cells with ≥ {o.MinCount} vectors; icons maximise each cell's mean vector ({o.Steps} steps); fainter = fewer vectors";
        var faded = tiles.Select((t, i) => icons is null ? t : Fade(t, 0.25 + 0.75 * cells[i].Members.Length / maxCount)).ToList();
        var counts = icons is null ? Layout(o.Grid, cells, cells.Select(k => (string?)k.Members.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList()) : null;
        ctx.Output.Display("atlas", null, Figure.Titled(Figure.Table(Layout(o.Grid, cells, faded), title: detail, captions: counts), head));

        if (predicted is null) return;
        var majority = cells.Select(k => Majority(k, sample, predicted)).ToList();
        var classes = majority.Where(x => x.Class is not null).Select(x => x.Class!.Value).Distinct().OrderBy(x => x).ToList();
        string Name(long k) => k < ctx.Labels.Count ? ctx.Labels[(int)k] : $"class {k}";
        var framed = tiles.Select((t, i) => majority[i].Class is long k ? Frame(t, Colour(k), Math.Max(2, size / 16)) : t).ToList();
        var grid = Layout(o.Grid, cells, framed);
        // Legend: a swatch per class, in rows as wide as the (trimmed) grid, at least 4 swatches a row.
        int cols = Math.Max(4, grid.Max(r => r.Count));
        var swatches = classes.Select(k => Shade(size, 0, Colour(k))).ToList();
        var rows = grid.Select(r => (IReadOnlyList<RgbImage?>)r).ToList();
        var captions = grid.Select(r => (IReadOnlyList<string?>)r.Select(_ => (string?)null).ToList()).ToList();
        for (int s = 0; s < swatches.Count; s += cols)
        {
            rows.Add(swatches.Skip(s).Take(cols).Select(x => (RgbImage?)x).ToList());
            captions.Add(classes.Skip(s).Take(cols).Select(k => (string?)$"{Name(k)} ({majority.Count(x => x.Class == k)})").ToList());
        }
        var classTitle = $"Most common predicted class of each cell's inputs (frame colour; legend: class and number of cells) — {cells.Count} cells of '{o.Layer}'";
        ctx.Output.Display("atlas-classes", null, Figure.Titled(Figure.Table(rows, title: classTitle, captions: captions), head));
    }

    /// <summary>Grid rows × columns of one item per cell (default where a cell is empty), trimmed to the occupied rows
    /// and columns so the figure is no larger than the occupied grid.</summary>
    static List<IReadOnlyList<T?>> Layout<T>(int grid, List<AtlasCell> cells, IReadOnlyList<T?> items) where T : class
    {
        var table = Enumerable.Range(0, grid).Select(_ => new T?[grid]).ToList();
        for (int i = 0; i < cells.Count; i++) table[cells[i].Row][cells[i].Column] = items[i];
        int r0 = cells.Min(k => k.Row), r1 = cells.Max(k => k.Row), c0 = cells.Min(k => k.Column), c1 = cells.Max(k => k.Column);
        return table.Skip(r0).Take(r1 - r0 + 1).Select(r => (IReadOnlyList<T?>)r.Skip(c0).Take(c1 - c0 + 1).ToList()).ToList();
    }

    static readonly ScottPlot.Palettes.Category10 Palette = new();

    static byte[] Colour(long k)
    {
        var c = Palette.GetColor((int)(k % 10));
        return [c.R, c.G, c.B];
    }

    /// <summary>The icon blended over white with opacity <paramref name="alpha"/>.</summary>
    static RgbImage Fade(RgbImage img, double alpha)
    {
        var px = new byte[img.Pixels.Length];
        for (int i = 0; i < px.Length; i++) px[i] = (byte)Math.Round(255 - alpha * (255 - img.Pixels[i]));
        return img with { Pixels = px };
    }

    /// <summary>A square of grey (darker for larger <paramref name="level"/>), or of <paramref name="colour"/>.</summary>
    static RgbImage Shade(int size, double level, byte[]? colour = null)
    {
        var px = new byte[size * size * 3];
        byte g = (byte)Math.Round(235 - 200 * level);
        for (int i = 0; i < size * size; i++)
        {
            px[3 * i] = colour?[0] ?? g; px[3 * i + 1] = colour?[1] ?? g; px[3 * i + 2] = colour?[2] ?? g;
        }
        return new RgbImage(size, size, px);
    }

    /// <summary>A frame of width <paramref name="f"/> inside the border.</summary>
    static RgbImage Frame(RgbImage img, byte[] colour, int f)
    {
        var px = (byte[])img.Pixels.Clone();
        for (int y = 0; y < img.Height; y++)
            for (int x = 0; x < img.Width; x++)
                if (x < f || y < f || x >= img.Width - f || y >= img.Height - f)
                {
                    int at = (y * img.Width + x) * 3;
                    px[at] = colour[0]; px[at + 1] = colour[1]; px[at + 2] = colour[2];
                }
        return img with { Pixels = px };
    }
}
