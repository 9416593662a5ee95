using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>Shared steps of explanation techniques, so each technique stays one small class.</summary>
public static class Explain
{
    /// <summary>Memory budget of a run that sets no <c>settings.memory_budget_mb</c> (1 GiB).</summary>
    public const long DefaultMemoryBudgetBytes = 1L << 30;

    /// <summary>One standalone <see cref="IAnalysisContext.RunLayerPass"/> for contexts without a host (test doubles,
    /// benchmarks): a forward pass over <paramref name="ctx"/>'s batches that feeds a fresh consumer, with progress.</summary>
    public static ILayerConsumer StandaloneLayerPass(IAnalysisContext ctx, LayerPass pass)
    {
        var consumer = pass.Create();
        consumer.Begin(ctx.InputCount);
        long rows = 0;
        foreach (var (batch, activation) in LayerBatches(ctx, pass.Layer))
        {
            using var scope = NewDisposeScope();
            consumer.Consume(batch, activation);
            rows += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(0.8 * rows / ctx.InputCount.Value, $"forward pass {rows}/{ctx.InputCount}");
        }
        return consumer;
    }

    /// <summary>Forward pass with <paramref name="layers"/> and the target's layers captured; the target picks what to
    /// explain on this (unperturbed) output. Dispose the returned capture.</summary>
    public static (Tensor Output, ILayerCapture Capture, TargetInput TargetInput, TargetSelection Selection) Forward(
        IModel model, ITarget target, Tensor input, IEnumerable<string> layers, bool forGradients, TargetSelection? given = null, int slot = 0)
    {
        var capture = model.Capture(layers.Union(target.RequiredLayers).ToList(), forGradients);
        try
        {
            var output = model.Forward(input);
            var ti = new TargetInput(output, l => capture[l]);
            return (output, capture, ti, given ?? target.Select(ti, slot));
        }
        catch
        {
            capture.Dispose();
            throw;
        }
    }

    /// <summary>As <see cref="Forward(IModel, ITarget, Tensor, IEnumerable{string}, bool, TargetSelection?, int)"/>; with
    /// <paramref name="layerInputs"/>, the capture holds the *inputs* of <paramref name="layers"/> (<see cref="ILayerInputs"/>).</summary>
    public static (Tensor Output, ILayerCapture Capture, TargetInput TargetInput, TargetSelection Selection) Forward(
        IModel model, ITarget target, Tensor input, IEnumerable<string> layers, bool forGradients, bool layerInputs, TargetSelection? given = null, int slot = 0)
    {
        if (!layerInputs) return Forward(model, target, input, layers, forGradients, given, slot);
        var inputs = LayerInputs.Of(model, "attribute_to_layer_input").CaptureInputs(layers.ToList(), forGradients);
        try
        {
            var (output, capture, ti, selection) = Forward(model, target, input, [], forGradients, given, slot);
            return (output, new InputsCapture(inputs, capture), ti, selection);
        }
        catch
        {
            inputs.Dispose();
            throw;
        }
    }

    /// <summary>Layer inputs first, then whatever the target captured.</summary>
    sealed class InputsCapture(ILayerCapture inputs, ILayerCapture rest) : ILayerCapture
    {
        public Tensor this[string layer] => inputs.TryGet(layer, out var t) ? t : rest[layer];
        public bool TryGet(string layer, out Tensor activation) => inputs.TryGet(layer, out activation) || rest.TryGet(layer, out activation);
        public void Dispose()
        {
            rest.Dispose();
            inputs.Dispose();
        }
    }

    /// <summary>Streams the data with one no-grad forward per batch, yielding each batch with the activation of
    /// <paramref name="layer"/> (owned by the stream: valid until the enumeration moves on).</summary>
    public static IEnumerable<(InputBatch Batch, Tensor Activation)> LayerBatches(IAnalysisContext ctx, string layer)
    {
        foreach (var batch in ctx.Batches())
        {
            using var capture = ctx.Model.Capture([layer], forGradients: false);
            using (no_grad())
            using (NewDisposeScope())
                ctx.Model.Forward(batch.Input);
            yield return (batch, capture[layer]);
        }
    }

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<IModel, Dictionary<string, long>> Footprints = new();

    /// <summary>Bytes one input of this shape occupies in a forward pass: the input plus every layer's output, measured
    /// once per model and shape with a probe forward (cached).</summary>
    public static long BytesPerInput(IModel model, long[] shape)
    {
        var key = string.Join("x", shape.Skip(1));
        var cache = Footprints.GetOrCreateValue(model);
        lock (cache)
            if (cache.TryGetValue(key, out var known)) return known;
        long bytes = shape.Skip(1).Aggregate(1L, (a, b) => a * b) * 4;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var captures = new List<(string Name, ILayerCapture Capture)>();
            try
            {
                foreach (var l in model.Layers)
                    try { captures.Add((l.Name, model.Capture([l.Name], forGradients: false))); } catch (LoupeException) { /* not tensor → tensor */ }
                using (SideInputs.ForRows(model, [0]))
                    model.Forward(zeros([1, .. shape.Skip(1)]));
                foreach (var (name, c) in captures)
                    if (c.TryGet(name, out var a)) bytes += a.numel() * a.element_size();
            }
            finally { foreach (var (_, c) in captures) c.Dispose(); }
        }
        lock (cache) cache[key] = bytes;
        return bytes;
    }

    /// <summary>Activations a pass is sized to when the memory budget would allow more (64 MiB, as estimated by
    /// <see cref="BytesPerInput"/>): larger passes are no faster per copy, and in a pipeline run they were several times
    /// slower — faithfulness-correlation's 3,200 copies of the demo CNN took 4.7 s in passes of 1,600 (the 1 GiB
    /// budget's), 1.75 s in passes of 512 and 0.8–1.0 s in passes of 64–128, with 1.86 M page faults against 0.1 M
    /// (`Loupe.Benchmarks.dll --batch-sweep`, docs/benchmarks.md). Never below <see cref="MinPassCopies"/>.</summary>
    public const long PassBytes = 64L << 20;

    /// <summary>The fewest copies the speed cap (<see cref="PassBytes"/>) leaves in a pass: resnet18 at 224² ran
    /// 23.7 ms a copy in passes of 1, 19.9 in passes of 2 and 17.1–17.2 from 8 to 32 (same benchmark).</summary>
    public const long MinPassCopies = 8;

    /// <summary>Copies per forward pass: <paramref name="requested"/>, or as many as fill <see cref="PassBytes"/> of
    /// activations (at least <see cref="MinPassCopies"/>) and the step's memory budget still holds (activations measured
    /// by <see cref="BytesPerInput"/>, ×3 with gradients for saved tensors and their gradients), between 1 and
    /// 4096.</summary>
    public static long CopiesPerForward(IAnalysisContext ctx, Tensor x, int? requested, bool gradients = false)
    {
        if (requested is { } r) return r;
        var per = Math.Max(1, BytesPerInput(ctx.Model, x.shape) * (gradients ? 3 : 1));
        return Math.Clamp(Math.Min(ctx.MemoryBudgetBytes / per, Math.Max(MinPassCopies, PassBytes / per)), 1, 4096);
    }

    /// <summary>Items per pass when <paramref name="total"/> items go through passes of at most
    /// <paramref name="most"/>: as few passes as that allows, of even sizes, so that the last one is not a runt (forward
    /// time per copy is not flat in the batch: resnet18 at 224×224 runs 40 copies as 20 + 20 in ~0.88× and as 32 + 8
    /// in ~0.94× the time of one pass of 40 on one machine, as 20 + 20 in ~0.62× and as 24 + 16 in ~0.65× on another,
    /// `Loupe.Benchmarks.dll --road-large 224 8 chunks`).</summary>
    public static long EvenPasses(long total, long most)
    {
        total = Math.Max(1, total);
        long passes = (total + Math.Max(1, most) - 1) / Math.Max(1, most);
        return (total + passes - 1) / passes;
    }

    /// <summary>Gradient of the target scores w.r.t. the input (one forward + one backward); the target is selected on
    /// this forward unless <paramref name="given"/>.</summary>
    public static (Tensor Gradient, TargetSelection Selection) InputGradient(IAnalysisContext ctx, Tensor input, TargetSelection? given, int slot)
    {
        using var scope = NewDisposeScope();
        var x = input.detach().requires_grad_(true);
        var (_, capture, ti, selection) = Forward(ctx.Model, ctx.Target, x, [], forGradients: true, given, slot);
        using (capture)
        {
            var g = Gradient(ctx.Target, ti, selection, x);
            return (scope.MoveToOuter(g), selection);
        }
    }

    /// <summary>Gradients of the target scores w.r.t. the image <paramref name="input"/> and every side input (Captum's
    /// tuple inputs): <paramref name="side"/> gives the side values of the forward's rows (null: the active ones,
    /// <see cref="IModelSideInputs.Active"/>). Side is empty for single-input models.</summary>
    public static (Tensor Gradient, Dictionary<string, Tensor> Side, TargetSelection Selection) InputGradients(
        IAnalysisContext ctx, Tensor input, IReadOnlyDictionary<string, Tensor>? side, TargetSelection? given, int slot)
    {
        var values = side ?? (SideInputs.Of(ctx.Model)?.Active ?? new Dictionary<string, Tensor>());
        if (values.Count == 0)
        {
            var (g0, sel0) = InputGradient(ctx, input, given, slot);
            return (g0, new Dictionary<string, Tensor>(), sel0);
        }
        using var scope = NewDisposeScope();
        var x = input.detach().requires_grad_(true);
        var names = values.Keys.ToList();
        var leaves = names.ToDictionary(n => n, n => values[n].detach().clone().requires_grad_(true), StringComparer.Ordinal);
        using var use = SideInputs.Use(ctx.Model, leaves);
        var (_, capture, ti, selection) = Forward(ctx.Model, ctx.Target, x, [], forGradients: true, given, slot);
        using (capture)
        {
            var score = ctx.Target.Scores(ti, selection).sum();
            var grads = CheckedOps.Grad([score], [x, .. names.Select(n => leaves[n])]);
            BackwardErrors.ThrowIfAny();
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (int i = 0; i < names.Count; i++) result[names[i]] = scope.MoveToOuter(grads[i + 1]);
            return (scope.MoveToOuter(grads[0]), result, selection);
        }
    }

    /// <summary>Target scores of a batch with no gradient (selecting on it unless <paramref name="given"/>).</summary>
    public static (Tensor Scores, Tensor Output, TargetSelection Selection) Scores(IAnalysisContext ctx, Tensor input, TargetSelection? given, int slot)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (output, capture, ti, selection) = Forward(ctx.Model, ctx.Target, input, [], forGradients: false, given, slot);
        using (capture)
        {
            var s = ctx.Target.Scores(ti, selection);
            return (scope.MoveToOuter(s), scope.MoveToOuter(output), selection);
        }
    }

    /// <summary>d(Σ target scores)/d(<paramref name="wrt"/>). Inputs are independent in eval mode, so the gradient of the
    /// sum is each row's own gradient.</summary>
    public static Tensor Gradient(ITarget target, TargetInput input, TargetSelection selection, Tensor wrt)
    {
        using var scope = NewDisposeScope();
        var score = target.Scores(input, selection).sum();
        var g = CheckedOps.Grad([score], [wrt])[0];
        BackwardErrors.ThrowIfAny();
        return scope.MoveToOuter(g);
    }

    /// <summary>Most overlays in a step's grid.</summary>
    public const int MaxGridTiles = 64;

    /// <summary>Writes the per-input raw map and display overlay, and keeps the overlay for the step's grid.</summary>
    public static void Emit(IAnalysisContext ctx, string name, InputBatch batch, Tensor raw, Tensor displayMap, TargetSelection? selection, List<RgbImage> gridTiles, int maxGridTiles = MaxGridTiles)
        => Emit(ctx, name, batch, raw, displayMap, selection, gridTiles, null, null, maxGridTiles);

    /// <summary>Writes the per-input raw map (unchanged) and display overlay drawn in <paramref name="style"/> (null:
    /// min-max scaled viridis), and keeps the overlay and its caption (input id, target) for the step's grid.</summary>
    public static void Emit(IAnalysisContext ctx, string name, InputBatch batch, Tensor raw, Tensor displayMap, TargetSelection? selection,
        List<RgbImage> gridTiles, List<string>? gridCaptions, OverlayStyle? style, int maxGridTiles = MaxGridTiles)
    {
        using var cpu = raw.detach().to(ScalarType.Float32).cpu().contiguous();
        var overlays = StyledOverlays(batch.Pixels, displayMap, style);
        var shown = displayMap.detach().to(ScalarType.Float32).cpu().contiguous().ToArray<float>();
        int hw = shown.Length / Math.Max(1, batch.Ids.Length);
        for (int i = 0; i < batch.Ids.Length; i++)
        {
            var target = selection?.Labels[i];
            using var row = cpu[i];
            ctx.Output.Raw(name, batch.Ids[i], new NdArray(row.ToArray<float>(), row.shape), target);
            var overlay = Display.Scale(overlays[i], Display.UpscaleFactor(overlays[i].Width));
            var range = RangeText(shown.AsSpan(i * hw, hw), style);
            if (selection?.Marks?[i] is { Length: > 0 } marks) overlay = Display.DrawMarks(overlay, marks, overlays[i].Height, overlays[i].Width);
            ctx.Output.Display(name, batch.Ids[i], overlay, target, range);
            if (gridTiles.Count < maxGridTiles)
            {
                gridTiles.Add(overlay);
                gridCaptions?.Add(Caption(batch.Ids[i], target, range));
            }
        }
    }

    /// <summary>A grid tile's caption: input id and target (what a merge of shards can rebuild from the artifacts).</summary>
    public static string Caption(string id, string? target) => target is null ? id : $"{id}\n{target}";

    /// <summary>A grid tile's caption with the value range its colours span (<see cref="RangeText"/>).</summary>
    public static string Caption(string id, string? target, string range) => $"{Caption(id, target)}\n{range}";

    /// <summary>The values the colour bar's ends stand for on one display map drawn in <paramref name="style"/>: its
    /// minimum and maximum (min–max scaling), or 0 and the clip value (Captum's scaling; ±clip for signed maps). Each map
    /// is scaled on its own, so this is a fact of the map alone, the same whether a run is sharded or not.</summary>
    public static string RangeText(ReadOnlySpan<float> map, OverlayStyle? style)
    {
        static string F(double v) => v.ToString("G3", System.Globalization.CultureInfo.InvariantCulture);
        style ??= new OverlayStyle();
        if (!style.CaptumScaling)
        {
            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            foreach (var v in map)
                if (!float.IsNaN(v)) { min = Math.Min(min, v); max = Math.Max(max, v); }
            return min > max ? "no values" : $"{F(min)} … {F(max)}";
        }
        var sign = style.Sign ?? AttributionSign.Absolute;
        var (_, t) = Display.NormalizeAttribution(map, sign, style.OutlierPerc ?? 0);
        return sign switch
        {
            AttributionSign.All => $"±{F(t)}",
            AttributionSign.Negative => $"−{F(t)} … 0",
            _ => $"0 … {F(t)}",
        };
    }

    /// <summary>Overlays of N×h×w maps on N×C×H×W pixels in <paramref name="style"/> (null: min-max, viridis).</summary>
    public static RgbImage[] StyledOverlays(Tensor pixels, Tensor maps, OverlayStyle? style)
    {
        style ??= new OverlayStyle();
        double alpha = style.Opacity ?? 0.55;
        var cmap = style.EffectiveColormap;
        int n = (int)maps.shape[0];
        if (!style.CaptumScaling) return Display.Overlays(pixels, maps, alpha, normalize: true, cmap);
        var sign = style.Sign ?? AttributionSign.Absolute;
        var m = maps.detach().to(ScalarType.Float32).cpu().contiguous().ToArray<float>();
        int hw = m.Length / Math.Max(1, n);
        var scaled = new float[m.Length];
        for (int i = 0; i < n; i++)
        {
            var (s, _) = Display.NormalizeAttribution(m.AsSpan(i * hw, hw), sign, style.OutlierPerc ?? 0);
            if (sign == AttributionSign.All) for (int k = 0; k < s.Length; k++) s[k] = (s[k] + 1) / 2;
            s.CopyTo(scaled, i * hw);
        }
        using var st = tensor(scaled, maps.shape);
        return Display.Overlays(pixels, st, alpha, normalize: false, cmap);
    }

    /// <summary>The colour bar of overlays drawn in <paramref name="style"/>.</summary>
    public static ColourBar Bar(OverlayStyle? style)
    {
        style ??= new OverlayStyle();
        var lut = Display.Lut(style.EffectiveColormap);
        if (!style.CaptumScaling) return new ColourBar(lut, "min", "max", style.Describe());
        return new ColourBar(lut, style.Sign == AttributionSign.All ? "−scale" : "0", style.Sign == AttributionSign.All ? "+scale" : "scale", style.Describe());
    }

    /// <summary>Writes the step's grid of overlays (one tile per input, up to 64).</summary>
    public static void EmitGrid(IAnalysisContext ctx, string name, List<RgbImage> tiles) => Grid(ctx.Output, name, tiles);

    /// <summary>Writes <c>name-grid</c>: the tiles in a square-ish grid (nothing when there are none).</summary>
    public static void Grid(IArtifactSink output, string name, IReadOnlyList<RgbImage> tiles)
    {
        if (tiles.Count > 0) output.Display(name + "-grid", null, Display.Grid(tiles, (int)Math.Ceiling(Math.Sqrt(tiles.Count))));
    }

    /// <summary>Writes <c>name-grid</c> as a labelled sheet: <paramref name="title"/>, a caption under each tile and a
    /// colour bar (nothing when there are no tiles).</summary>
    public static void Grid(IArtifactSink output, string name, IReadOnlyList<RgbImage> tiles, IReadOnlyList<string?>? captions, string title, ColourBar? bar)
    {
        if (tiles.Count > 0) output.Display(name + "-grid", null, Figure.Sheet(tiles, (int)Math.Ceiling(Math.Sqrt(tiles.Count)), captions, title, bar));
    }
}
