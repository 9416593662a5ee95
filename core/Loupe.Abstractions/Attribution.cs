using static TorchSharp.torch;

namespace Loupe.Abstractions;

/// <summary>What an attribution method gets for one batch.</summary>
/// <param name="Context">The running step's context (model, target, seed, ...).</param>
/// <param name="Input">Normalised input N×C×H×W (possibly perturbed copies, e.g. by noise-tunnel).</param>
/// <param name="Selection">What to explain per row; null: the method selects from its own forward pass (slot <paramref name="Slot"/>).</param>
/// <param name="Slot">Target slot (e.g. the k-th class of <c>top-k</c>).</param>
/// <param name="Ids">Input ids of the rows, when they are original inputs (null for perturbed copies).</param>
public sealed record AttributionInput(IAnalysisContext Context, Tensor Input, TargetSelection? Selection, int Slot = 0, string[]? Ids = null)
{
    /// <summary>The inputs an image-dependent baseline (<c>mean</c>, <c>blur</c>) is made of, row for row, when
    /// <see cref="Input"/> holds perturbed copies of them (noise-tunnel's noisy copies: Captum keeps the baseline of the
    /// clean input); null: <see cref="Input"/> itself.</summary>
    public Tensor? BaselineSource { get; init; }

    /// <summary>The tensor a baseline is made of: <see cref="BaselineSource"/>, else <see cref="Input"/>.</summary>
    public Tensor BaselineOf => BaselineSource ?? Input;

    /// <summary>The ids of the data inputs the rows were made from, row for row — set for original rows (without the
    /// slot suffix <see cref="Ids"/> may carry) and for copies of them (noise-tunnel's noisy copies, a metric's
    /// perturbed copies), where <see cref="Ids"/> is null; null where the rows come from no single input (a metric's
    /// mosaics). What per-input files (a <c>baseline_folder</c>: Captum's per-example tensor baselines) are looked up by.</summary>
    public string[]? SourceIds { get; init; }

    /// <summary>The <see cref="SourceIds"/> of copies made of this input's rows: copy j was made from row
    /// <paramref name="rows"/>[j]; null where this input has none.</summary>
    public string[]? SourceIdsOf(IReadOnlyList<int> rows) => SourceIds is { } s ? rows.Select(r => s[r]).ToArray() : null;

    /// <summary>One baseline per row (N×C×H×W, normalised) given by a wrapper, replacing the method's own baseline
    /// options: <c>noise-tunnel</c>'s draws from a baseline distribution (Captum NoiseTunnel's
    /// draw_baseline_from_distrib). Only methods that implement <see cref="ITakesBaseline"/> read it.</summary>
    public Tensor? Baselines { get; init; }
}

/// <summary>An attribution method that compares the input with one baseline per row (integrated gradients, DeepLift,
/// occlusion, …) and takes <see cref="AttributionInput.Baselines"/> when a wrapper gives them.</summary>
public interface ITakesBaseline : IAttribution;

/// <summary>An attribution map per input and what it explains.</summary>
/// <param name="Map">N×C×H×W (per channel) or N×H×W, at input resolution.</param>
/// <param name="Selection">What each row explains.</param>
/// <param name="Raw">An extra raw result at natural resolution (e.g. a CAM at layer resolution), or null.</param>
public sealed record AttributionResult(Tensor Map, TargetSelection Selection, Tensor? Raw = null)
{
    /// <summary>Attributions to the model's side inputs (<see cref="IModelSideInputs"/>), name → N×shape, or null; the
    /// base writes them as <c>&lt;id&gt;.&lt;artifact&gt;-&lt;input&gt;.npy</c> and one table per step.</summary>
    public IReadOnlyDictionary<string, Tensor>? Side { get; init; }

    /// <summary>How <see cref="Map"/> follows from <see cref="Raw"/> when it is a function of the raw result alone (a
    /// layer attribution's channel sum resized to the input; a Captum-convention CAM's upsampling), or null. A wrapper
    /// that combines the results of noisy copies (<c>noise-tunnel</c>) combines the raw results, as the library whose
    /// method returns the raw result combines that (Captum's NoiseTunnel around LayerGradCam squares layer-resolution
    /// maps), and derives the map with this.</summary>
    public Func<Tensor, Tensor>? MapOfRaw { get; init; }
}

/// <summary>A technique that produces one map per input for a target: what <c>noise-tunnel</c> and the metrics wrap.</summary>
public interface IAttribution : IAnalysis
{
    /// <summary>Computes maps for one batch (tensors belong to the caller's dispose scope).</summary>
    AttributionResult Attribute(object options, AttributionInput input);
    /// <summary>Base name of its artifacts (e.g. <c>saliency</c>).</summary>
    string ArtifactName { get; }
}

/// <summary>Base of attribution techniques: one abstract step (<see cref="Attribute(TOptions, AttributionInput)"/>); the
/// base streams batches, loops over target slots, writes raw maps, overlays and the step grid.</summary>
public abstract class AttributionAnalysis<TOptions> : Analysis<TOptions>, IAttribution, IShardable where TOptions : class, new()
{
    /// <inheritdoc/>
    public abstract string ArtifactName { get; }
    /// <summary>Name of the extra raw result (<see cref="AttributionResult.Raw"/>).</summary>
    protected virtual string RawName => ArtifactName + "-raw";

    /// <summary>Computes maps for one batch.</summary>
    public abstract AttributionResult Attribute(TOptions options, AttributionInput input);

    readonly Dictionary<string, System.Text.Json.Nodes.JsonObject> _sideTables = new();

    /// <summary>How the technique's overlays are drawn when neither the step's <c>display:</c> nor
    /// <c>settings.display</c> says otherwise (null: each map min-max scaled, viridis). Gradient maps use Captum's
    /// <c>visualize_image_attr</c> scaling: |attribution| clipped at the 99th cumulative percentile.</summary>
    protected virtual OverlayStyle? DefaultOverlay => null;

    /// <summary>A grid title: step id and artifact name.</summary>
    static string Title(string step, string name) => step == name ? step : $"{step} · {name}";

    AttributionResult IAttribution.Attribute(object options, AttributionInput input) => Attribute((TOptions)options, input);

    /// <inheritdoc/>
    public override void Run(TOptions options, IAnalysisContext ctx)
    {
        _sideTables.Clear();
        int slots = Math.Max(1, ctx.Target.Slots);
        var style = (ctx.OverlayStyle ?? new OverlayStyle()).Over(DefaultOverlay);
        var tiles = new List<RgbImage>();
        var captions = new List<string>();
        long done = 0;
        foreach (var batch in ctx.Batches())
        {
            // Grid tiles input by input (slots of one input together), so the grid does not depend on batch edges.
            var slotTiles = Enumerable.Range(0, slots).Select(_ => new List<RgbImage>()).ToArray();
            var slotCaptions = Enumerable.Range(0, slots).Select(_ => new List<string>()).ToArray();
            for (int slot = 0; slot < slots; slot++)
            {
                using var scope = NewDisposeScope();
                ctx.Cancellation.ThrowIfCancellationRequested();
                // A target that reads the data (e.g. ground-truth labels) selects here; any other selects on the
                // technique's own forward pass.
                var given = ctx.Target is IDataTarget data ? data.Select(batch, slot) : null;
                var result = Attribute(options, new AttributionInput(ctx, batch.Input, given, slot, slots > 1 ? batch.Ids.Select(i => $"{i}.top{slot + 1}").ToArray() : batch.Ids) { SourceIds = batch.Ids });
                var suffix = slots > 1 ? $".top{slot + 1}" : "";
                if (slots == 1) MapCache.Put(ctx, batch.Ids, result.Map, result.Selection);   // reused by steps that evaluate this one
                if (result.Raw is { } raw)
                    for (int i = 0; i < batch.Ids.Length; i++)
                        ctx.Output.Raw(RawName + suffix, batch.Ids[i], NdArray.FromTensor(raw[i]), result.Selection.Labels[i]);
                // Channels: max |value| (Simonyan et al.) for absolute maps, the sum (Captum) when the sign matters.
                var display = DisplayMap(result.Map, style);
                Explain.Emit(ctx, ArtifactName + suffix, batch, result.Map, display, result.Selection, slotTiles[slot], slotCaptions[slot], style, Explain.MaxGridTiles - tiles.Count);
                // After the overlays, so the step's first display per input (what comparison.png shows) stays the map.
                if (result.Side is { } side) SideTables.Add(ctx, ArtifactName + suffix, batch.Ids, result.Selection, side, _sideTables);
            }
            int room = Explain.MaxGridTiles - tiles.Count;
            tiles.AddRange(Interleave(slotTiles).Take(room));
            captions.AddRange(Interleave(slotCaptions).Take(room));
            done += batch.Ids.Length;
            if (ctx.InputCount is > 0) ctx.Progress(done / (double)ctx.InputCount.Value);
        }
        Explain.Grid(ctx.Output, ArtifactName, tiles, captions, Title(ctx.StepId, ArtifactName), Explain.Bar(style));
        SideTables.Write(ctx.Output, _sideTables);
        Finish(options, ctx);
    }

    /// <summary>Called once after all batches (e.g. to write a summary).</summary>
    protected virtual void Finish(TOptions options, IAnalysisContext ctx) { }

    /// <summary>The map an overlay shows: channels reduced by max |value| (Simonyan et al.) for absolute maps, by the
    /// sum (Captum) when the sign matters.</summary>
    static Tensor DisplayMap(Tensor map, OverlayStyle style) => map.dim() != 4 ? map
        : style.CaptumScaling && style.Sign is not (null or AttributionSign.Absolute) ? map.sum([1]) : map.abs().amax([1]);

    static IEnumerable<T> Interleave<T>(IReadOnlyList<IReadOnlyList<T>> slots) =>
        Enumerable.Range(0, slots.Select(s => s.Count).DefaultIfEmpty().Max()).SelectMany(i => slots.Where(s => i < s.Count).Select(s => s[i]));

    /// <summary>Shards: maps and overlays are per input (unioned by the host); the grid is rebuilt from the first
    /// overlays in dataset order. Override (calling this) when <see cref="Finish"/> writes whole-step results.</summary>
    public virtual void Merge(IShardMerge merge)
    {
        var single = merge.InputDisplayEntries(ArtifactName, Explain.MaxGridTiles);
        var slots = single.Count > 0 ? [single] : Enumerable.Range(1, int.MaxValue)
            .Select(k => merge.InputDisplayEntries($"{ArtifactName}.top{k}", Explain.MaxGridTiles)).TakeWhile(t => t.Count > 0).ToList();
        var tiles = Interleave(slots).Take(Explain.MaxGridTiles).ToList();
        var style = (merge.OverlayStyle ?? new OverlayStyle()).Over(DefaultOverlay);
        // Each tile's value range, from its own raw map (the map every shard wrote beside the overlay).
        List<string> names = single.Count > 0 ? [ArtifactName] : Enumerable.Range(1, slots.Count).Select(k => $"{ArtifactName}.top{k}").ToList();
        var raws = names.SelectMany(n => merge.InputRaws(n, int.MaxValue).Select(r => (Key: (n, r.Input), r.Array))).ToDictionary(r => r.Key, r => r.Array);
        var tileNames = Interleave(slots.Select((s, k) => (IReadOnlyList<string>)s.Select(_ => names[k]).ToList()).ToList()).Take(Explain.MaxGridTiles).ToList();
        string Caption(int i)
        {
            var t = tiles[i];
            if (!raws.TryGetValue((tileNames[i], t.Input), out var raw)) return Explain.Caption(t.Input, t.Target);
            using var scope = NewDisposeScope();
            using var map = tensor(raw.Data, raw.Shape).unsqueeze(0);
            return Explain.Caption(t.Input, t.Target, Explain.RangeText(DisplayMap(map, style).contiguous().ToArray<float>(), style));
        }
        Explain.Grid(merge.Output, ArtifactName, tiles.Select(t => t.Image).ToList(),
            tiles.Select((_, i) => (string?)Caption(i)).ToList(), Title(merge.StepId, ArtifactName), Explain.Bar(style));
    }
}

/// <summary>Writes attributions to side inputs (<see cref="AttributionResult.Side"/>): per input row a raw
/// <c>&lt;artifact&gt;-&lt;input&gt;</c> array (with a bar chart for vectors of up to <see cref="MaxBars"/>), and per step one JSON table <c>&lt;artifact&gt;-&lt;input&gt;.json</c>
/// (input id → target and the flattened values), the numbers a bar chart of a vector input is drawn from.</summary>
public static class SideTables
{
    /// <summary>Longest vector drawn as a bar chart (<c>&lt;id&gt;.&lt;artifact&gt;-&lt;input&gt;.png</c>).</summary>
    public const int MaxBars = 64;

    /// <summary>Writes the rows of one batch and adds them to <paramref name="tables"/>.</summary>
    public static void Add(IAnalysisContext ctx, string artifact, IReadOnlyList<string> ids, TargetSelection selection,
        IReadOnlyDictionary<string, Tensor> side, Dictionary<string, System.Text.Json.Nodes.JsonObject> tables)
    {
        foreach (var (input, values) in side)
        {
            var name = $"{artifact}-{input}";
            if (!tables.TryGetValue(name, out var table))
                tables[name] = table = new System.Text.Json.Nodes.JsonObject
                {
                    ["input"] = input,
                    ["shape"] = new System.Text.Json.Nodes.JsonArray(values.shape.Skip(1).Select(d => (System.Text.Json.Nodes.JsonNode)d).ToArray()),
                    ["rows"] = new System.Text.Json.Nodes.JsonObject(),
                };
            for (int i = 0; i < ids.Count; i++)
            {
                var row = NdArray.FromTensor(values[i]);
                ctx.Output.Raw(name, ids[i], row, selection.Labels[i]);
                if (row.Shape.Length == 1 && row.Data.Length <= MaxBars)   // a vector input: its bar chart
                    ctx.Output.Display(name, ids[i], Toolkit.Figure.Bars(row.Data, $"{ids[i]} · {input} · {selection.Labels[i]}"), selection.Labels[i]);
                table["rows"]![ids[i]] = new System.Text.Json.Nodes.JsonObject
                {
                    ["target"] = selection.Labels[i],
                    ["values"] = new System.Text.Json.Nodes.JsonArray(row.Data.Select(v => (System.Text.Json.Nodes.JsonNode)v).ToArray()),
                };
            }
        }
    }

    /// <summary>Writes the step's tables.</summary>
    public static void Write(IArtifactSink output, Dictionary<string, System.Text.Json.Nodes.JsonObject> tables)
    {
        foreach (var (name, table) in tables) output.Json(name, table);
    }
}

/// <summary>Marks an attribution technique whose maps do not come from the model (maps read from files, Quantus's
/// <c>a_batch</c>): it gives the original inputs' maps for the target they were made for, and cannot explain copies
/// of the inputs, another class or a changed model. Metrics that explain again (robustness under noise, another class,
/// parameter randomisation) refuse to evaluate it at validation.</summary>
public interface IFixedMaps : IAttribution;
