using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>Options of <c>nearest-neighbours</c>.</summary>
public sealed record NearestNeighboursOptions : FeatureOptions
{
    /// <summary>Distance.</summary>
    [Description("l2 (Euclidean, default) or cosine (1 − cosine similarity)")]
    public Metric Metric { get; init; } = Metric.L2;
    /// <summary>k.</summary>
    [Range(1, 1000), Description("neighbours per query")]
    public int K { get; init; } = 8;
    /// <summary>Queries.</summary>
    [Description("query inputs: input ids (e.g. '00012') or row indices; default the first 8 inputs")]
    public string[]? Queries { get; init; }
    /// <summary>Exclude the query itself.</summary>
    [Description("leave the query itself out of its neighbours (default true)")]
    public bool ExcludeSelf { get; init; } = true;
    /// <summary>Rows per distance block.</summary>
    [Range(1, 1 << 20), Description("dataset rows per distance block (memory: queries × block)")]
    public int BlockSize { get; init; } = 4096;
}

/// <summary>Exact brute-force k-NN over a layer's dataset features (L2 or cosine), in blocks of dataset rows with
/// tensor ops; results merged exactly across blocks.</summary>
public sealed class NearestNeighbours : FeatureAnalysis<NearestNeighboursOptions>, IDeclaresMetrics
{
    /// <inheritdoc/>
    /// <remarks>label_agreement: the share of each query's neighbours with its label, written when the data has labels.</remarks>
    public IReadOnlyList<string> MetricNames => ["label_agreement"];

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(NearestNeighboursOptions options, AnalysisValidationContext context)
    {
        if (options.Queries is { Length: 0 }) yield return "option 'queries' is empty";
    }

    /// <summary>Exact k nearest rows of <paramref name="x"/> (N×D) for each query row (Q×D): indices and distances,
    /// ascending by distance (ties by index). <paramref name="exclude"/>[q] (a row index or -1) is never returned.</summary>
    public static (long[,] Index, double[,] Distance) Search(Tensor x, Tensor queries, int k, Metric metric, long[] exclude, int blockSize = 4096)
    {
        using var scope = NewDisposeScope();
        long n = x.shape[0], q = queries.shape[0];
        var xs = x.to(ScalarType.Float64);
        var qs = queries.to(ScalarType.Float64);
        if (metric == Metric.Cosine)
        {
            xs = xs / xs.norm(1, keepdim: true).clamp_min(1e-12);
            qs = qs / qs.norm(1, keepdim: true).clamp_min(1e-12);
        }
        var qn = (qs * qs).sum(1, keepdim: true);
        var excl = tensor(exclude).view(-1, 1);
        Tensor? bestD = null, bestI = null;
        for (long start = 0; start < n; start += blockSize)
        {
            using var inner = NewDisposeScope();
            long len = Math.Min(blockSize, n - start);
            var b = xs.narrow(0, start, len);
            var dot = qs.MatMul(b.t());
            var d = metric == Metric.Cosine
                ? 1 - dot
                : (qn + (b * b).sum(1).unsqueeze(0) - 2 * dot).clamp_min(0).sqrt();
            var idx = arange(start, start + len, dtype: ScalarType.Int64).unsqueeze(0).expand(q, -1);
            d = d.masked_fill(idx.eq(excl), double.PositiveInfinity);
            var candD = bestD is null ? d : cat([bestD, d], 1);
            var candI = bestI is null ? idx : cat([bestI, idx], 1);
            int kk = (int)Math.Min(k, candD.shape[1]);
            // Stable ordering: sort by distance, ties broken by the lower index (candidates are in index order).
            var (sorted, order) = candD.sort(1, stable: true);
            bestD = sorted.narrow(1, 0, kk).MoveToOuterDisposeScope();
            bestI = candI.gather(1, order.narrow(1, 0, kk)).MoveToOuterDisposeScope();
        }
        int kOut = (int)bestD!.shape[1];
        var di = bestD.contiguous().ToArray<double>();
        var ii = bestI!.contiguous().ToArray<long>();
        var index = new long[q, kOut];
        var dist = new double[q, kOut];
        for (int r = 0; r < q; r++)
            for (int c = 0; c < kOut; c++) { index[r, c] = ii[r * kOut + c]; dist[r, c] = di[r * kOut + c]; }
        return (index, dist);
    }

    /// <summary>Resolves query strings (ids first, then row indices).</summary>
    public static int[] ResolveQueries(string[]? queries, string[] ids)
    {
        if (queries is null) return Enumerable.Range(0, Math.Min(8, ids.Length)).ToArray();
        var byId = new Dictionary<string, int>();
        for (int i = 0; i < ids.Length; i++) byId.TryAdd(ids[i], i);
        return queries.Select(s => byId.TryGetValue(s, out var i) ? i
            : int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) && r >= 0 && r < ids.Length ? r
            : throw new LoupeException($"option 'queries': '{s}' is neither an input id nor a row index in [0, {ids.Length - 1}]")).ToArray();
    }

    /// <inheritdoc/>
    public override void Run(NearestNeighboursOptions options, IAnalysisContext ctx)
    {
        using var fs = Features.Collect(ctx, options.Layer, options.Pool);
        var qIdx = ResolveQueries(options.Queries, fs.Ids);
        int available = fs.N - (options.ExcludeSelf ? 1 : 0);
        if (available < 1) throw new LoupeException("nearest-neighbours needs at least 2 inputs when exclude_self is true");
        int k = Math.Min(options.K, available);
        if (k < options.K) ctx.Warn($"k = {options.K} exceeds the {available} candidate inputs; using k = {k}");
        using var scope = NewDisposeScope();
        var queries = fs.X.index_select(0, tensor(qIdx.Select(i => (long)i).ToArray()));
        var exclude = qIdx.Select(i => options.ExcludeSelf ? (long)i : -1L).ToArray();
        var (index, dist) = Search(fs.X, queries, k, options.Metric, exclude, options.BlockSize);
        int q = qIdx.Length;
        var idxArr = new float[q * k];
        var distArr = new float[q * k];
        var json = new List<object>();
        for (int r = 0; r < q; r++)
        {
            var list = new List<object>();
            for (int c = 0; c < k; c++)
            {
                idxArr[r * k + c] = index[r, c];
                distArr[r * k + c] = (float)dist[r, c];
                list.Add(new { id = fs.Ids[index[r, c]], index = index[r, c], distance = dist[r, c], label = fs.Labels?[index[r, c]] });
            }
            json.Add(new { query = fs.Ids[qIdx[r]], index = qIdx[r], label = fs.Labels?[qIdx[r]], neighbours = list });
        }
        ctx.Output.Raw("indices", null, new NdArray(idxArr, [q, k]));
        ctx.Output.Raw("distances", null, new NdArray(distArr, [q, k]));
        ctx.Output.Json("indices", index.Cast<long>().Chunk(k).ToArray());
        ctx.Output.Json("distances", dist.Cast<double>().Chunk(k).ToArray());
        ctx.Output.Json("neighbours", new { layer = options.Layer, metric = options.Metric.ToString().ToLowerInvariant(), k, queries = json });

        // Grid: one row per query, the query first, then its neighbours (second pass reads only these images).
        var needed = qIdx.Concat(index.Cast<long>().Select(v => (int)v)).Distinct().ToList();
        var pixels = Features.PixelsAt(ctx, needed);
        try
        {
            var tiles = new List<RgbImage>();
            var captions = new List<string?>();
            string Name(int i) => fs.Labels?[i] is { } l && l >= 0 ? "\n" + (l < ctx.Labels.Count ? ctx.Labels[(int)l] : $"class {l}") : "";
            for (int r = 0; r < q; r++)
            {
                tiles.Add(Tile(pixels[qIdx[r]], query: true));
                captions.Add($"query {fs.Ids[qIdx[r]]}{Name(qIdx[r])}");
                for (int c = 0; c < k; c++)
                {
                    tiles.Add(Tile(pixels[(int)index[r, c]], query: false));
                    captions.Add($"{fs.Ids[index[r, c]]} d={Display.Number(dist[r, c])}{Name((int)index[r, c])}");
                }
            }
            var metric = options.Metric.ToString().ToLowerInvariant();
            ctx.Output.Display("neighbours", null, Figure.Sheet(tiles, k + 1, captions,
                $"{options.Layer}: {k} nearest neighbours per query ({metric} distance; query first, framed)"));
        }
        finally
        {
            foreach (var t in pixels.Values) t.Dispose();
        }
        if (fs.Labels is { } labels)
        {
            int same = 0;
            for (int r = 0; r < q; r++) for (int c = 0; c < k; c++) if (labels[index[r, c]] == labels[qIdx[r]]) same++;
            ctx.Output.Metric("label_agreement", same / (double)(q * k));
        }
    }

    static RgbImage Tile(Tensor chw, bool query)
    {
        var img = Display.Image(chw);
        img = Display.Scale(img, Display.UpscaleFactor(img.Width, 64));
        return query ? Frame(img, 3, [230, 80, 20]) : img;
    }

    /// <summary>Draws a coloured frame inside the image border.</summary>
    public static RgbImage Frame(RgbImage img, int width, byte[] rgb)
    {
        var px = (byte[])img.Pixels.Clone();
        for (int y = 0; y < img.Height; y++)
            for (int x = 0; x < img.Width; x++)
                if (x < width || y < width || x >= img.Width - width || y >= img.Height - width)
                {
                    int o = (y * img.Width + x) * 3;
                    px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2];
                }
        return img with { Pixels = px };
    }
}
