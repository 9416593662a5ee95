using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>One kept activation: image row, position at layer resolution, value.</summary>
public readonly record struct TopEntry(float Value, int Image, int Y, int X) : IComparable<TopEntry>
{
    /// <summary>Better first: larger value, then earlier image, row, column (a total, deterministic order).</summary>
    public int CompareTo(TopEntry o)
    {
        int c = o.Value.CompareTo(Value);
        if (c != 0) return c;
        c = Image.CompareTo(o.Image); if (c != 0) return c;
        c = Y.CompareTo(o.Y); if (c != 0) return c;
        return X.CompareTo(o.X);
    }
}

/// <summary>Bounded top-k of <see cref="TopEntry"/> (a min-heap on the order above): memory k, independent of the dataset.</summary>
public sealed class TopK(int k)
{
    // Priority = the entry itself; the heap's root is the worst kept entry (the comparer reverses "better first").
    readonly PriorityQueue<TopEntry, TopEntry> _heap = new(Comparer<TopEntry>.Create((a, b) => b.CompareTo(a)));

    /// <summary>Offers an entry; returns false when it is not better than the worst of k kept ones.</summary>
    public bool Offer(TopEntry e)
    {
        if (_heap.Count < k) { _heap.Enqueue(e, e); return true; }
        var worst = _heap.Peek();
        if (e.CompareTo(worst) >= 0) return false;
        _heap.DequeueEnqueue(e, e);
        return true;
    }

    /// <summary>Kept entries, best first.</summary>
    public TopEntry[] Sorted() => _heap.UnorderedItems.Select(t => t.Element).Order().ToArray();
}

/// <summary>Options of <c>max-patches</c>.</summary>
public sealed record MaxPatchesOptions : IReshapesLayers
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("spatial layer (N×K×h×w, or tokens / channels-last laid out by 'reshape') whose units are ranked, e.g. relu3")]
    public string Layer { get; init; } = "";
    /// <summary>How the layer is laid out as N×C×h×w (ViT tokens, NHWC).</summary>
    [Description("layout of the layer as N×C×h×w: auto (from the shape), none, nhwc, vit (leading non-patch tokens dropped: class, distillation, registers), tokens")]
    public LayerReshape Reshape { get; init; } = LayerReshape.Auto;
    /// <summary>Channels.</summary>
    [Description("channels to rank; omit for all channels of the layer")]
    public int[]? Channels { get; init; }
    /// <summary>k.</summary>
    [Range(1, 1024), Description("patches kept per channel (top-k positions over the dataset)")]
    public int Top { get; init; } = 9;
    /// <summary>Tile size.</summary>
    [Range(8, 1024), Description("display size of one patch, in pixels (at least)")]
    public int TileSize { get; init; } = 64;
    /// <summary>Probes for the receptive field.</summary>
    [Range(1, 256), Description("random probe inputs whose gradient support is united to measure the receptive field")]
    public int Probes { get; init; } = 4;
}

/// <summary>Maximally activating patches: one streaming pass keeps, per channel, the top-k (image, y, x, value) of the
/// activation with a bounded heap; a second pass crops each unit's receptive field (measured by gradient support,
/// <see cref="ReceptiveFields"/>) from only the images needed. Outputs one grid per channel (<c>channel-0005.png</c>;
/// the part of a field that lies outside the image is grey), <c>index.json</c>, <c>top-values.npy</c> (C×k, NaN
/// where fewer positions exist), <c>top-positions.npy</c> (C×k×3: image row, y, x) and <c>receptive-field.json</c>.
/// Boxes are [y0, x0, y1, x1] in input pixels, end-exclusive, clipped to the image. Token and channels-last layers
/// are laid out as N×C×h×w first (<see cref="MaxPatchesOptions.Reshape"/>), for ranking and for the receptive field
/// alike: a ViT token's field is its patch before the first attention and the whole image after it.</summary>
public sealed class MaxPatches : Analysis<MaxPatchesOptions>, IPlansLayerPasses, IShardable, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["receptive_field"];

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(MaxPatchesOptions options, AnalysisValidationContext context)
    {
        if (options.Channels is { Length: 0 }) yield return "option 'channels' is empty";
        if (options.Channels?.Any(c => c < 0) == true) yield return "option 'channels' has a negative index";
        if (!context.Capabilities.HasFlag(ModelCapabilities.Gradients))
            yield return "max-patches measures receptive fields by gradient support and needs a backend with gradients; this backend is forward-only";
    }

    /// <summary>The shared dataset pass that keeps the top-k entries per channel.</summary>
    public static LayerPass Pass(string layer, int[]? channels, int k, LayerReshape reshape = LayerReshape.Auto) =>
        new(layer, $"loupe.max-patches.topk:{layer}:{(channels is null ? "all" : string.Join(',', channels))}:{k}:{LayerReshapes.Name(reshape)}",
            () => new TopKConsumer(layer, channels, k, reshape));

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options)
    {
        var o = (MaxPatchesOptions)options;
        return [Pass(o.Layer, o.Channels, o.Top, o.Reshape)];
    }

    /// <summary>The top-k entries per selected channel over the dataset (best first), the channel list and the ids in
    /// row order — from the run's shared dataset pass. Positions are on the layer's grid per <paramref name="reshape"/>.</summary>
    public static (int[] Channels, TopEntry[][] Top, List<string> Ids) StreamTopK(IAnalysisContext ctx, string layer, int[]? channels, int k,
        LayerReshape reshape = LayerReshape.Auto) =>
        ((TopKConsumer)ctx.RunLayerPass(Pass(layer, channels, k, reshape))).Result();

    /// <summary>Per row of <paramref name="flat"/> (C × M), the first <paramref name="k"/> entries of a stable
    /// descending sort: value descending, ties by index ascending, so the kept set is deterministic (topk alone is
    /// not stable: with ReLU zeros at the boundary it would pick arbitrary positions). Without sorting M: topk finds
    /// each row's k-th value t; the kept entries are those above t plus the lowest-index entries equal to t, and
    /// only those k are sorted. Same result as <c>sort(stable)[:k]</c> (a test checks it on tie-heavy rows).</summary>
    public static (Tensor Values, Tensor Indices) FirstInStableOrder(Tensor flat, int k)
    {
        using var scope = NewDisposeScope();
        long rows = flat.shape[0];
        var threshold = flat.topk(k, dim: 1).values.narrow(1, k - 1, 1);           // C × 1
        var above = flat > threshold;
        var tie = flat == threshold;
        // An explicit Scalar kept alive for the call: `k - tensor` builds a temporary Scalar that a long-running process
        // once saw finalized mid-call ("Unknown scalar type" from libtorch, after ~10 min of benchmark calls).
        using TorchSharp.Scalar kScalar = (long)k;
        var need = above.sum([1], keepdim: true, type: ScalarType.Int64).neg_().add_(kScalar);   // C × 1, ≥ 1
        var keep = above.logical_or(tie.logical_and(tie.to(ScalarType.Int64).cumsum(1) <= need));
        var idx = keep.nonzero().select(1, 1).view(rows, k);                      // ascending index per row
        var (values, order) = flat.gather(1, idx).sort(1, descending: true, stable: true);
        return (scope.MoveToOuter(values), scope.MoveToOuter(idx.gather(1, order)));
    }

    /// <summary>Bounded heaps per channel: memory k × channels, independent of the dataset.</summary>
    sealed class TopKConsumer(string layer, int[]? channels, int k, LayerReshape reshape) : ILayerConsumer
    {
        TopK[]? _heaps;
        int _row;
        readonly List<string> _ids = [];

        public void Consume(InputBatch batch, Tensor captured)
        {
            using var scope = NewDisposeScope();
            var a = LayerReshapes.ToGrid(captured, reshape, layer, (batch.Input.shape[2], batch.Input.shape[3]));
            long b = a.shape[0], kc = a.shape[1], h = a.shape[2], w = a.shape[3];
            if (channels is null) channels = Enumerable.Range(0, (int)kc).ToArray();
            else if (channels.FirstOrDefault(c => c >= kc, -1) is var bad and >= 0)
                throw new LoupeException($"option 'channels': index {bad} is out of range: layer '{layer}' has {kc} channels");
            _heaps ??= channels.Select(_ => new TopK(k)).ToArray();
            var sel = a.index_select(1, tensor(channels.Select(c => (long)c).ToArray())).to(ScalarType.Float32);
            var flat = sel.transpose(0, 1).reshape(channels.Length, -1);               // C' × (b·h·w), image-major
            int kk = (int)Math.Min(k, flat.shape[1]);
            var (vals, idx) = FirstInStableOrder(flat, kk);
            var v = vals.cpu().contiguous().ToArray<float>();
            var ix = idx.cpu().contiguous().ToArray<long>();
            for (int c = 0; c < channels.Length; c++)
                for (int t = 0; t < kk; t++)
                {
                    long f = ix[c * kk + t];
                    var e = new TopEntry(v[c * kk + t], _row + (int)(f / (h * w)), (int)(f % (h * w) / w), (int)(f % w));
                    if (!_heaps[c].Offer(e)) break;   // sorted: nothing later in this row can enter
                }
            _row += (int)b;
            _ids.AddRange(batch.Ids);
        }

        public (int[] Channels, TopEntry[][] Top, List<string> Ids) Result()
        {
            if (_heaps is null) throw new LoupeException("the data source produced no inputs");
            return (channels!, _heaps.Select(hp => hp.Sorted()).ToArray(), _ids);
        }
    }

    /// <inheritdoc/>
    public override void Run(MaxPatchesOptions options, IAnalysisContext ctx)
    {
        var rf = ReceptiveFields.Measure(ctx.Model, options.Layer, ctx.Input, ctx.Seed, options.Probes, ctx.Warn, options.Reshape);
        ctx.Output.Json("receptive-field", new
        {
            layer = options.Layer, method = rf.Method, height = rf.Height, width = rf.Width, stride = new[] { rf.StrideY, rf.StrideX },
            reference_unit = new[] { rf.RefY, rf.RefX }, reference_box = new[] { rf.Y0, rf.X0, rf.Y1, rf.X1 },
        });
        ctx.Output.Metric("receptive_field", Math.Max(rf.Height, rf.Width));
        var (channels, top, ids) = StreamTopK(ctx, options.Layer, options.Channels, options.Top, options.Reshape);
        int k = options.Top, n = channels.Length, H = ctx.Input.Height, W = ctx.Input.Width;
        if (top.Any(t => t.Length < k))
            ctx.Warn($"top = {k} exceeds the {top.Min(t => t.Length)} positions of layer '{options.Layer}' over the {ids.Count} input(s); those grids have fewer tiles (NaN rows in top-values.npy)");
        long offset = ctx.Shard?.FirstRow ?? 0;   // rows written are dataset rows

        var values = new float[n * k];
        var positions = new float[n * k * 3];
        Array.Fill(values, float.NaN); Array.Fill(positions, float.NaN);
        var index = new Dictionary<string, object>();
        for (int c = 0; c < n; c++)
        {
            var list = new List<object>();
            for (int t = 0; t < top[c].Length; t++)
            {
                var e = top[c][t];
                var box = rf.Box(e.Y, e.X, H, W);
                values[c * k + t] = e.Value;
                positions[(c * k + t) * 3] = e.Image + offset; positions[(c * k + t) * 3 + 1] = e.Y; positions[(c * k + t) * 3 + 2] = e.X;
                list.Add(new { id = ids[e.Image], index = e.Image + offset, y = e.Y, x = e.X, value = e.Value, box = new[] { box.Y0, box.X0, box.Y1, box.X1 } });
            }
            index[channels[c].ToString(System.Globalization.CultureInfo.InvariantCulture)] = list;
        }
        ctx.Output.Raw("top-values", null, new NdArray(values, [n, k]));
        ctx.Output.Raw("top-positions", null, new NdArray(positions, [n, k, 3]));
        ctx.Output.Json("index", new { layer = options.Layer, box = "y0, x0, y1, x1 (input pixels, end-exclusive, clipped)", channels = index });

        // Second pass: crop only the needed images; tiles are made as the images stream by (no image is kept).
        var byImage = new Dictionary<int, List<(int C, int T)>>();
        for (int c = 0; c < n; c++)
            for (int t = 0; t < top[c].Length; t++)
                (byImage.TryGetValue(top[c][t].Image, out var l) ? l : byImage[top[c][t].Image] = []).Add((c, t));
        var tiles = top.Select(e => new RgbImage[e.Length]).ToArray();
        int scale = Display.UpscaleFactor(Math.Max(rf.Height, rf.Width), options.TileSize);
        int row = 0, maxRow = byImage.Count == 0 ? -1 : byImage.Keys.Max();
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            for (int i = 0; i < batch.Ids.Length; i++)
            {
                if (!byImage.TryGetValue(row + i, out var uses)) continue;
                foreach (var (c, t) in uses) tiles[c][t] = Patch(batch.Pixels[i], rf, top[c][t], H, W, scale, options.TileSize);
            }
            row += batch.Ids.Length;
            if (row > maxRow) break;
        }
        for (int c = 0; c < n; c++)
            if (ctx.Shard is null) ctx.Output.Display($"channel-{channels[c]:D4}", null, Grid(options.Layer, channels[c], tiles[c], top[c].Select(e => (ids[e.Image], e.Value)).ToList(), k));
            else ctx.Output.Display($"channel-{channels[c]:D4}.candidates", null, Display.Grid(tiles[c], tiles[c].Length, padding: 0));
        ctx.Progress(1, "patches written");
    }

    /// <summary>A channel's sheet: titled by layer and channel, each patch captioned with its input and activation.</summary>
    static RgbImage Grid(string layer, long channel, RgbImage[] tiles, IReadOnlyList<(string Id, float Value)> entries, int k) =>
        Figure.Sheet(tiles, (int)Math.Ceiling(Math.Sqrt(k)), entries.Select(e => (string?)$"{e.Id}\nact {Display.Number(e.Value)}").ToList(),
            $"{layer} · channel {channel}: top {tiles.Length} patches");

    /// <summary>Shards: each shard keeps its own top-k per channel (entries in <c>index.json</c> with dataset rows, and
    /// their tiles in one strip per channel, <c>channel-0005.candidates.png</c>); the global top-k is the top-k of
    /// those candidates under the same total order, so the merge is exact.</summary>
    public void Merge(IShardMerge merge)
    {
        merge.Same("receptive-field");
        merge.Output.Metric("receptive_field", merge.Metrics[0]["receptive_field"]);
        int k = (int)merge.Raw("top-values")[0].Shape[1];
        var shards = merge.Json("index");
        var channels = shards[0]["channels"]!.AsObject().Select(kv => kv.Key).ToList();
        var values = new float[channels.Count * k];
        var positions = new float[channels.Count * k * 3];
        Array.Fill(values, float.NaN); Array.Fill(positions, float.NaN);
        var index = new System.Text.Json.Nodes.JsonObject();
        for (int c = 0; c < channels.Count; c++)
        {
            var name = $"channel-{int.Parse(channels[c], System.Globalization.CultureInfo.InvariantCulture):D4}";
            var strips = merge.Display(name + ".candidates");
            var candidates = shards.SelectMany((s, i) =>
            {
                var entries = s["channels"]![channels[c]]!.AsArray();
                var tiles = ShardMerges.SplitStrip(strips[i], entries.Count);
                return entries.Select((e, t) => (Entry: new TopEntry((float)e!["value"]!, (int)e["index"]!, (int)e["y"]!, (int)e["x"]!), Json: e, Tile: tiles[t]));
            }).OrderBy(x => x.Entry).Take(k).ToList();
            for (int t = 0; t < candidates.Count; t++)
            {
                var e = candidates[t].Entry;
                values[c * k + t] = e.Value;
                positions[(c * k + t) * 3] = e.Image; positions[(c * k + t) * 3 + 1] = e.Y; positions[(c * k + t) * 3 + 2] = e.X;
            }
            index[channels[c]] = new System.Text.Json.Nodes.JsonArray(candidates.Select(x => x.Json!.DeepClone()).ToArray());
            merge.Output.Display(name, null, Grid((string?)shards[0]["layer"] ?? "", long.Parse(channels[c], System.Globalization.CultureInfo.InvariantCulture),
                candidates.Select(x => x.Tile).ToArray(), candidates.Select(x => ((string?)x.Json!["id"] ?? "", x.Entry.Value)).ToList(), k));
        }
        merge.Output.Raw("top-values", null, new NdArray(values, [channels.Count, k]));
        merge.Output.Raw("top-positions", null, new NdArray(positions, [channels.Count, k, 3]));
        var head = shards[0].DeepClone().AsObject();
        head["channels"] = index;
        merge.Output.Json("index", head);
    }

    /// <summary>The unit's receptive field cut from the image (C×H×W in [0,1]); parts outside the image are grey.</summary>
    static RgbImage Patch(Tensor pixels, ReceptiveField rf, TopEntry e, int h, int w, int scale, int tileSize)
    {
        using var scope = NewDisposeScope();
        var (uy0, ux0, _, _) = rf.Unclipped(e.Y, e.X);
        var (y0, x0, y1, x1) = rf.Box(e.Y, e.X, h, w);
        var canvas = full(pixels.shape[0], rf.Height, rf.Width, 0.5f);
        if (y1 > y0 && x1 > x0)
            canvas.narrow(1, y0 - uy0, y1 - y0).narrow(2, x0 - ux0, x1 - x0).copy_(pixels.narrow(1, y0, y1 - y0).narrow(2, x0, x1 - x0));
        if (Math.Max(rf.Height, rf.Width) > tileSize)
        {
            double f = tileSize / (double)Math.Max(rf.Height, rf.Width);
            canvas = Display.Resize(canvas.unsqueeze(0), Math.Max(1, (int)Math.Round(rf.Height * f)), Math.Max(1, (int)Math.Round(rf.Width * f)))[0];
            return Display.Image(canvas);
        }
        return Display.Scale(Display.Image(canvas), scale);
    }
}
