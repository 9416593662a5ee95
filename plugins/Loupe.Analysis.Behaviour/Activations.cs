using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Behaviour;

/// <summary>How an activation map is thresholded into a mask.</summary>
public enum ThresholdMode
{
    /// <summary>No mask.</summary>
    None,
    /// <summary>Values above <c>value</c>.</summary>
    Value,
    /// <summary>Values above the channel's dataset quantile <c>quantile</c> (Network Dissection: 0.995).</summary>
    Quantile,
    /// <summary>Values above the channel's dataset mean + k·σ.</summary>
    Sigma,
}

/// <summary>Thresholding options.</summary>
public sealed record ThresholdOptions
{
    /// <summary>Mode.</summary>
    [Description("none, value, quantile or sigma")]
    public ThresholdMode Mode { get; init; } = ThresholdMode.None;
    /// <summary>Fixed threshold.</summary>
    [Description("mode value: the threshold")]
    public double Value { get; init; }
    /// <summary>Quantile in (0,1).</summary>
    [Range(0.0, 1.0), Description("mode quantile: per-channel dataset quantile (0.995 = top 0.5%)")]
    public double Quantile { get; init; } = 0.995;
    /// <summary>k for mean + k·σ.</summary>
    [Description("mode sigma: k in mean + k·σ")]
    public double K { get; init; } = 2;
}

/// <summary>Options of <c>activations</c>.</summary>
public sealed record ActivationsOptions : IReshapesLayers
{
    /// <summary>Layer.</summary>
    [Required, LayerName(Spatial = true), Description("layer whose activation maps are shown (N×K×h×w, or tokens / channels-last through 'reshape')")]
    public string Layer { get; init; } = "";
    /// <summary>Layout of the layer.</summary>
    [Description("lay the layer out as N×C×h×w: auto (from its shape), none, nhwc (Swin/ConvNeXt channels-last), vit (drop the leading tokens that are not patches — class token, DeiT's distillation token, registers — of N×(k+h·w)×C), tokens (N×(h·w)×C), as on CAM steps")]
    public LayerReshape Reshape { get; init; } = LayerReshape.Auto;
    /// <summary>Channels.</summary>
    [Description("channels to show; omit for the top-n most active per input")]
    public int[]? Channels { get; init; }
    /// <summary>Top-n.</summary>
    [Range(1, 4096), Description("when channels is omitted: the n channels with the largest mean activation per input")]
    public int Top { get; init; } = 8;
    /// <summary>Thresholding.</summary>
    [Description("thresholding into masks")]
    public ThresholdOptions Threshold { get; init; } = new();
}

/// <summary>Layer activation maps, upsampled to the input (bilinear) and overlaid, with optional thresholding by a value,
/// a per-channel dataset quantile, or mean + k·σ. Statistics for quantile/sigma come from a first streaming pass at
/// layer resolution (quantiles are exact up to 2^20 values per channel, from a uniform reservoir beyond).</summary>
public sealed class Activations : Analysis<ActivationsOptions>, IPlansLayerPasses
{
    const int ReservoirSize = 1 << 20;

    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public override IEnumerable<string> Validate(ActivationsOptions options, AnalysisValidationContext context)
    {
        if (options.Channels is { Length: 0 }) yield return "option 'channels' is empty";
        if (options.Channels?.Any(c => c < 0) == true) yield return "option 'channels' has a negative index";
        if (options.Threshold.Mode == ThresholdMode.Quantile && options.Threshold.Quantile is <= 0 or >= 1)
            yield return "option 'threshold.quantile' must be strictly between 0 and 1";
    }

    /// <inheritdoc/>
    public override void Run(ActivationsOptions options, IAnalysisContext ctx)
    {
        float[]? thresholds = options.Threshold.Mode switch
        {
            ThresholdMode.Quantile or ThresholdMode.Sigma => DatasetThresholds(options, ctx),
            _ => null,
        };
        var grid = new List<IReadOnlyList<RgbImage?>>();
        var gridCaptions = new List<IReadOnlyList<string?>>();
        var gridIds = new List<string>();
        foreach (var (batch, captured) in Explain.LayerBatches(ctx, options.Layer))
        {
            using var scope = NewDisposeScope();
            var a = Grid(captured, options, batch.Input);
            long k = a.shape[1];
            CheckChannels(options, k);
            var h = batch.Input.shape[2]; var w = batch.Input.shape[3];
            for (int i = 0; i < batch.Ids.Length; i++)
            {
                var channels = options.Channels ?? TopChannels(a[i], options.Top);
                var idx = tensor(channels.Select(c => (long)c).ToArray());
                var maps = a[i].index_select(0, idx);
                ctx.Output.Raw("activations", batch.Ids[i], NdArray.FromTensor(maps));
                ctx.Output.Json($"{SafeId(batch.Ids[i])}.channels", channels);
                var up = Display.Resize(maps, h, w);
                var tiles = new List<RgbImage>();
                Tensor? masks = null;
                if (options.Threshold.Mode != ThresholdMode.None)
                {
                    var t = options.Threshold.Mode == ThresholdMode.Value
                        ? full(channels.Length, 1, 1, (float)options.Threshold.Value)
                        : tensor(channels.Select(c => thresholds![c]).ToArray()).view(-1, 1, 1);
                    masks = (up > t).to(ScalarType.Float32);
                    ctx.Output.Raw("masks", batch.Ids[i], NdArray.FromTensor(masks));
                }
                for (int c = 0; c < channels.Length; c++)
                {
                    var tile = masks is null
                        ? Display.Overlay(batch.Pixels[i], up[c])
                        : Display.Image(batch.Pixels[i] * (0.25f + 0.75f * masks[c].unsqueeze(0)));
                    tiles.Add(Display.Scale(tile, Display.UpscaleFactor(tile.Width, 64)));
                }
                var captions = channels.Select(c => (string?)$"ch {c}").ToList();
                var sheet = Figure.Sheet(tiles, Math.Min(8, tiles.Count), captions);
                ctx.Output.Display(masks is null ? "activations" : "masks", batch.Ids[i], sheet);
                if (grid.Count < 16) { grid.Add(tiles.ToArray()); gridCaptions.Add(captions); gridIds.Add(batch.Ids[i]); }
            }
        }
        var what = options.Threshold.Mode == ThresholdMode.None ? "activation maps (viridis, min–max per map)" : "inputs where each channel exceeds its threshold (the rest dimmed)";
        if (grid.Count > 0) ctx.Output.Display("activations-grid", null, Figure.Table(grid, null, gridIds, $"{ctx.StepId}: {options.Layer} — {what}", gridCaptions));
    }

    /// <summary>The captured layer as N×C×h×w, per the step's <c>reshape</c>.</summary>
    static Tensor Grid(Tensor a, ActivationsOptions options, Tensor input) => LayerReshapes.ToGrid(a, options.Reshape, options.Layer, (input.shape[2], input.shape[3]));

    static string SafeId(string id) => string.Concat(id.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' or '.' ? ch : '_'));

    static void CheckChannels(ActivationsOptions options, long k)
    {
        if (options.Channels?.FirstOrDefault(c => c >= k) is { } bad && options.Channels.Any(c => c >= k))
            throw new LoupeException($"option 'channels': index {bad} is out of range: layer '{options.Layer}' has {k} channels");
    }

    static int[] TopChannels(Tensor a, int top)
    {
        using var m = a.mean([1, 2]);
        using var order = m.argsort(descending: true);
        return order.data<long>().Take(top).Select(v => (int)v).ToArray();
    }

    /// <summary>The shared dataset pass that gathers a layer's per-channel statistics (sums and a seeded reservoir).</summary>
    public static LayerPass StatsPass(string layer, LayerReshape reshape = LayerReshape.Auto) =>
        new(layer, $"loupe.activations.stats:{layer}:{LayerReshapes.Name(reshape)}", () => new StatsConsumer(layer, reshape));

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) =>
        ((ActivationsOptions)options).Threshold.Mode is ThresholdMode.Quantile or ThresholdMode.Sigma ? [StatsPass(((ActivationsOptions)options).Layer, ((ActivationsOptions)options).Reshape)] : [];

    static float[] DatasetThresholds(ActivationsOptions options, IAnalysisContext ctx)
    {
        var stats = (StatsConsumer)ctx.RunLayerPass(StatsPass(options.Layer, options.Reshape));
        if (stats.Reservoirs is null) throw new LoupeException("the data source produced no inputs");
        CheckChannels(options, stats.Reservoirs.Length);
        var result = new float[stats.Reservoirs.Length];
        for (int c = 0; c < result.Length; c++)
        {
            if (options.Threshold.Mode == ThresholdMode.Sigma)
            {
                double mean = stats.Sum![c] / stats.Seen![c];
                double sd = Math.Sqrt(Math.Max(0, stats.SumSq![c] / stats.Seen[c] - mean * mean));
                result[c] = (float)(mean + options.Threshold.K * sd);
            }
            else
            {
                var sorted = stats.Reservoirs[c].ToArray();
                Array.Sort(sorted);
                // Linear interpolation between order statistics (NumPy's default 'linear' method).
                double pos = options.Threshold.Quantile * (sorted.Length - 1);
                int lo = (int)Math.Floor(pos), hi = Math.Min(lo + 1, sorted.Length - 1);
                result[c] = (float)(sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]));
            }
        }
        ctx.Output.Raw("thresholds", null, new NdArray(result, [result.Length]));
        return result;
    }

    /// <summary>Per-channel count, sum, sum of squares and a uniform reservoir of up to 2^20 values (seeded by the layer
    /// name, so every step that shares the pass sees the same sample).</summary>
    sealed class StatsConsumer(string layer, LayerReshape reshape) : ILayerConsumer
    {
        readonly Random _rng = new(StableHash(layer));
        public List<float>[]? Reservoirs;
        public long[]? Seen;
        public double[]? Sum, SumSq;

        static int StableHash(string s) { unchecked { int h = 17; foreach (var ch in s) h = h * 31 + ch; return h & int.MaxValue; } }

        public void Consume(InputBatch batch, Tensor captured)
        {
            using var scope = NewDisposeScope();
            var a = LayerReshapes.ToGrid(captured, reshape, layer, (batch.Input.shape[2], batch.Input.shape[3]));
            long k = a.shape[1];
            Reservoirs ??= Enumerable.Range(0, (int)k).Select(_ => new List<float>()).ToArray();
            Seen ??= new long[k]; Sum ??= new double[k]; SumSq ??= new double[k];
            var perChannel = a.transpose(0, 1).reshape(k, -1).to(ScalarType.Float64);
            var s1 = perChannel.sum(1).ToArray<double>();
            var s2 = (perChannel * perChannel).sum(1).ToArray<double>();
            var values = a.transpose(0, 1).reshape(k, -1).contiguous().ToArray<float>();
            long per = values.Length / k;
            for (int c = 0; c < k; c++)
            {
                Sum[c] += s1[c]; SumSq[c] += s2[c];
                var r = Reservoirs[c];
                for (long j = 0; j < per; j++)
                {
                    Seen[c]++;
                    if (r.Count < ReservoirSize) r.Add(values[c * per + j]);
                    else
                    {
                        long pick = _rng.NextInt64(Seen[c]);
                        if (pick < ReservoirSize) r[(int)pick] = values[c * per + j];
                    }
                }
            }
        }
    }
}

/// <summary>Registers the behaviour techniques.</summary>
public sealed class Registrar : IPluginRegistrar
{
    /// <inheritdoc/>
    public void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services) => services
        .AddLoupeAnalysis<Filters>("filters", "convolution filters as image tiles (Zeiler & Fergus 2014)")
        .AddLoupeAnalysis<Activations>("activations", "layer activation maps, upsampled and overlaid, with thresholding");
}
