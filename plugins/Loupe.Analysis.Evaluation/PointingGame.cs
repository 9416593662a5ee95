using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Which of several tied maxima the pointing game takes.</summary>
public enum PointingTies
{
    /// <summary>The first in raster order.</summary>
    First,
    /// <summary>Any of them: a hit when one lies in the mask.</summary>
    Any,
}

/// <summary>Options of <c>pointing-game</c>.</summary>
public sealed record PointingOptions : MetricOptions
{
    /// <summary>Object threshold.</summary>
    [Range(0.0, 1.0), Description("object mask: display pixel (max over channels, in [0,1]) > threshold")]
    public double Threshold { get; init; } = 0.1;
    /// <summary>Tolerance.</summary>
    [Range(0, 4096), Description("a hit may lie this many pixels (Euclidean) outside the mask (Zhang et al.: 15)")]
    public int Tolerance { get; init; } = 15;
    /// <summary>How a per-channel map becomes one value per pixel.</summary>
    [Description("per-pixel values of a per-channel map: unset = Σ_c |a_c| (an N×H×W map as is); false = the signed Σ_c a_c (Quantus abs: false, its default); true = |Σ_c a_c| (Quantus abs: true)")]
    public bool? Abs { get; init; }
    /// <summary>Ties.</summary>
    [Description("first (the first maximum in raster order, as argmax) or any (a hit when any tied maximum is in the mask, as Quantus)")]
    public PointingTies Ties { get; init; } = PointingTies.First;
    /// <summary>Weighted.</summary>
    [Description("a hit scores 1 − |mask| / pixels instead of 1, so large objects count less (Quantus weighted)")]
    public bool Weighted { get; init; }
    /// <summary>Masks folder.</summary>
    [FilePath(Directory = true), Description(ObjectMasks.MasksDescription)]
    public string? Masks { get; init; }
    /// <summary>Boxes file.</summary>
    [FilePath, Description(ObjectMasks.BoxesDescription)]
    public string? Boxes { get; init; }
}

/// <summary>Pointing game (Zhang et al. 2016) and mask-energy ratio. The object mask: a masks folder or boxes file
/// when given, the data source's masks when it has them, else computed from the input itself: pixels brighter than <c>threshold</c> (exact for objects on a black background such as Fashion-MNIST and
/// <c>fashion-placement</c>). A hit: the map's maximum (first one on ties, or any with <c>ties: any</c>; per-channel maps
/// reduced by Σ_c |·|, or as <c>abs</c> says) lies in the mask dilated by a disk of radius <c>tolerance</c>; with
/// <c>weighted</c> a hit scores 1 − |mask|/pixels (Quantus). Energy: Σ_mask max(map, 0) / Σ max(map, 0). Inputs without
/// object pixels are skipped with a warning.</summary>
public sealed class PointingGame : MetricAnalysis<PointingOptions>, IShardable
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward) { HandlesSideInputs = true };   // no copies: the batch's maps and masks
    /// <inheritdoc/>
    public override IReadOnlyList<string> MetricNames => ["hit_rate", "energy_mean", "energy_std", "skipped"];

    /// <inheritdoc/>
    protected override void Evaluate(PointingOptions o, IAnalysisContext ctx, MetricWriter writer)
    {
        var rows = new List<object>();
        var hits = new List<double>();
        var energies = new List<double>();
        var empty = new List<string>();
        int t = o.Tolerance;
        using var disk = Disk(t);
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            var x = batch.Input;
            long n = x.shape[0], h = x.shape[2], w = x.shape[3];
            var result = LinkedMaps(o, ctx, batch);
            var map = o.Abs is not null && result.Map.dim() == 4 ? Maps.Reduce(result.Map.sum(1), h, w) : Maps.Reduce(result.Map, h, w);
            if (o.Abs == true) map = map.abs();
            // The data source's object masks when it has them (e.g. fashion-placement), else non-background pixels.
            var mask = ObjectMasks.For(batch, o.Masks, o.Boxes, o.Threshold).to(ScalarType.Float32);
            var dilated = t == 0 ? mask : nn.functional.conv2d(mask.unsqueeze(1), disk, padding: [t, t]).squeeze(1) > 0.5f;
            var dil = dilated.to(ScalarType.Bool).reshape(n, h * w);
            var argmax = map.reshape(n, h * w).argmax(1);
            var flat = map.reshape(n, h * w);
            var hit = (o.Ties == PointingTies.Any
                ? (dil & (flat == flat.amax([1], keepdim: true))).any(1)
                : dil.gather(1, argmax.unsqueeze(1)).squeeze(1)).ToArray<bool>();
            var pos = map.clamp_min(0);
            var energy = ((pos * mask).sum([1, 2]) / pos.sum([1, 2]).clamp_min(1e-30f)).to(ScalarType.Float64).ToArray<double>();
            var area = mask.sum([1, 2]).ToArray<float>();
            var am = argmax.ToArray<long>();
            for (int i = 0; i < n; i++)
            {
                if (area[i] == 0) { empty.Add(batch.Ids[i]); continue; }
                hits.Add(hit[i] ? o.Weighted ? 1 - area[i] / (double)(h * w) : 1 : 0);
                energies.Add(energy[i]);
                rows.Add(new { id = batch.Ids[i], target = result.Selection.Labels[i], hit = hit[i], y = am[i] / w, x = am[i] % w, energy = energy[i], mask_pixels = (int)area[i] });
            }
        }
        if (empty.Count > 0)
            ctx.Warn($"pointing-game: {empty.Count} input(s) have no object pixels (no pixel > threshold {o.Threshold}), skipped: {string.Join(", ", empty.Take(10))}{(empty.Count > 10 ? ", ..." : "")}");
        ctx.Output.Json("pointing", new { of = o.Of!.Id, threshold = o.Threshold, tolerance = t, inputs = rows, skipped = empty });
        writer.Rate("hit_rate", "hit", hits, higherIsBetter: true);
        writer.Stat("energy", energies, higherIsBetter: true);
        writer.Count("skipped", empty.Count);
    }

    /// <inheritdoc/>
    protected override void MergeDetails(IShardMerge merge) => merge.Concat("pointing", "inputs", "skipped");

    /// <summary>A (2t+1)² disk kernel (1×1×k×k) for dilation by Euclidean distance ≤ t.</summary>
    static Tensor Disk(int t)
    {
        var k = 2 * t + 1;
        var d = new float[k * k];
        for (int y = 0; y < k; y++) for (int x = 0; x < k; x++) d[y * k + x] = (y - t) * (y - t) + (x - t) * (x - t) <= t * t ? 1 : 0;
        return tensor(d).view(1, 1, k, k);
    }
}
