using System.Text.Json.Nodes;

namespace Loupe.Abstractions;

/// <summary>The part of the dataset a sharded run reads (<c>loupe run --shard i/n</c>): rows
/// [<see cref="FirstRow"/>, <see cref="FirstRow"/> + <see cref="Rows"/>) of the data source, in dataset order.</summary>
/// <param name="Index">Shard index, 0-based.</param>
/// <param name="Count">Number of shards.</param>
/// <param name="FirstRow">Dataset row of the shard's first input.</param>
/// <param name="Rows">Number of inputs in the shard.</param>
public sealed record ShardInfo(int Index, int Count, long FirstRow, long Rows);

/// <summary>An analysis whose work is a map over the dataset, so that it can run on shards of the data
/// (<c>--shard i/n</c>) whose partial results merge exactly (<c>loupe merge</c>). Steps that are not
/// <see cref="IShardable"/> are refused under <c>--shard</c>.
/// <para>The host unions the per-input artifacts (those written with an input id) of all shards by itself; a
/// shardable analysis merges only what it wrote about the whole step (input id null), from the shards' files alone:
/// a partial result must therefore carry everything its merge needs (e.g. top-k candidates with their scores).</para></summary>
public interface IShardable
{
    /// <summary>Writes the step's whole-step results for the merged run to <see cref="IShardMerge.Output"/>, from the
    /// shards' results (in shard order, which is dataset order). Throw <see cref="LoupeException"/> for a problem the
    /// user must see; the merged step is then recorded as failed.</summary>
    void Merge(IShardMerge merge);

    /// <summary>Why a step with these <paramref name="options"/> cannot run on shards after all (e.g. an option that
    /// scores the inputs against each other), or null when it can (the default). The host refuses such a step under
    /// <c>--shard</c> with this reason, at validation.</summary>
    string? Unshardable(object options) => null;
}

/// <summary>What a step's merge reads (the shards' whole-step results and metrics) and where it writes.</summary>
public interface IShardMerge
{
    /// <summary>Step id.</summary>
    string StepId { get; }
    /// <summary>The shards, in order (rows are dataset rows).</summary>
    IReadOnlyList<ShardInfo> Shards { get; }
    /// <summary>Class labels of the run's model.</summary>
    IReadOnlyList<string> Labels { get; }
    /// <summary>The merged step's sink (same layout as an unsharded run).</summary>
    IArtifactSink Output { get; }
    /// <summary>Each shard's scalar metrics of this step.</summary>
    IReadOnlyList<IReadOnlyDictionary<string, double>> Metrics { get; }
    /// <summary>True when every shard wrote a whole-step artifact <paramref name="name"/> (<paramref name="extension"/>: npy, png or json).</summary>
    bool Has(string name, string extension);
    /// <summary>Each shard's whole-step raw result <paramref name="name"/>.</summary>
    IReadOnlyList<NdArray> Raw(string name);
    /// <summary>Each shard's whole-step JSON result <paramref name="name"/>.</summary>
    IReadOnlyList<JsonNode> Json(string name);
    /// <summary>Each shard's whole-step display image <paramref name="name"/>.</summary>
    IReadOnlyList<RgbImage> Display(string name);
    /// <summary>The per-input display images <paramref name="name"/> of all shards, in dataset order, at most <paramref name="max"/>.</summary>
    IReadOnlyList<RgbImage> InputDisplays(string name, int max);
    /// <summary>The step's display style as the shards ran it (see <see cref="IAnalysisContext.OverlayStyle"/>).</summary>
    OverlayStyle? OverlayStyle => null;
    /// <summary>As <see cref="InputDisplays"/>, with each image's input id and target description (for captions).</summary>
    IReadOnlyList<(string Input, string? Target, RgbImage Image)> InputDisplayEntries(string name, int max) =>
        InputDisplays(name, max).Select(i => ("", (string?)null, i)).ToList();
    /// <summary>The per-input raw results <paramref name="name"/> of all shards, in dataset order, at most
    /// <paramref name="max"/> (e.g. to label a rebuilt grid with each map's value range).</summary>
    IReadOnlyList<(string Input, NdArray Array)> InputRaws(string name, int max) => [];
}

/// <summary>The common merges: rows concatenated in dataset order, JSON arrays concatenated, a result every shard
/// computed identically.</summary>
public static class ShardMerges
{
    /// <summary>Concatenates the shards' arrays <paramref name="name"/> along the first axis (N×... rows in dataset
    /// order, e.g. features or labels) and writes the result.</summary>
    public static NdArray Rows(this IShardMerge merge, string name)
    {
        var parts = merge.Raw(name);
        var tail = parts[0].Shape.Skip(1).ToArray();
        if (parts.FirstOrDefault(p => !p.Shape.Skip(1).SequenceEqual(tail)) is { } bad)
            throw new LoupeException($"'{name}.npy' has shape ({string.Join(",", bad.Shape)}) in one shard and ({string.Join(",", parts[0].Shape)}) in another");
        var merged = new NdArray(parts.SelectMany(p => p.Data).ToArray(), [parts.Sum(p => p.Shape[0]), .. tail]);
        merge.Output.Raw(name, null, merged);
        return merged;
    }

    /// <summary>Merges JSON <paramref name="name"/>: a top-level array is concatenated; for an object, the first
    /// shard's object is kept and each of its <paramref name="arrays"/> properties is the concatenation of the shards'.
    /// Writes and returns the result.</summary>
    public static JsonNode Concat(this IShardMerge merge, string name, params string[] arrays)
    {
        var parts = merge.Json(name);
        JsonArray Cat(Func<JsonNode, JsonNode?> pick) =>
            new(parts.SelectMany(p => pick(p) as JsonArray ?? throw new LoupeException($"'{name}.json' of a shard has no array where one was expected"))
                .Select(n => n?.DeepClone()).ToArray());
        JsonNode merged;
        if (parts[0] is JsonArray) merged = Cat(p => p);
        else
        {
            var o = parts[0].DeepClone().AsObject();
            foreach (var a in arrays) o[a] = Cat(p => p[a]);
            merged = o;
        }
        merge.Output.Json(name, merged);
        return merged;
    }

    /// <summary>Writes the first shard's JSON <paramref name="name"/>, after checking every shard wrote the same.</summary>
    public static JsonNode Same(this IShardMerge merge, string name)
    {
        var parts = merge.Json(name);
        for (int i = 1; i < parts.Count; i++)
            if (!JsonNode.DeepEquals(parts[0], parts[i]))
                throw new LoupeException($"'{name}.json' differs between shard 0 and shard {i}; it should not depend on the data");
        merge.Output.Json(name, parts[0].DeepClone());
        return parts[0];
    }

    /// <summary>Cuts a strip made by <see cref="Display.Grid"/> with <c>columns = tiles, padding = 0</c> from
    /// equal-size tiles back into its <paramref name="count"/> tiles.</summary>
    public static RgbImage[] SplitStrip(RgbImage strip, int count)
    {
        if (count == 0) return [];
        if (strip.Width % count != 0) throw new LoupeException($"a strip {strip.Width} pixels wide does not hold {count} equal tiles");
        int w = strip.Width / count, h = strip.Height;
        var tiles = new RgbImage[count];
        for (int t = 0; t < count; t++)
        {
            var px = new byte[w * h * 3];
            for (int y = 0; y < h; y++) Buffer.BlockCopy(strip.Pixels, (y * strip.Width + t * w) * 3, px, y * w * 3, w * 3);
            tiles[t] = new RgbImage(w, h, px);
        }
        return tiles;
    }
}

/// <summary>Random streams tied to an input rather than to its position in a batch, so that a technique that draws
/// noise gives the same result for an image whatever the batch size, the order of the data or the shard it runs in.</summary>
public static class InputSeeds
{
    /// <summary>A seed from the step's seed and the input id (FNV-1a over the id's UTF-8 bytes; stable across
    /// processes and platforms, unlike <see cref="string.GetHashCode()"/>).</summary>
    public static ulong For(int stepSeed, string inputId)
    {
        ulong h = 14695981039346656037UL ^ (uint)stepSeed;
        foreach (var b in System.Text.Encoding.UTF8.GetBytes(inputId))
        {
            h ^= b;
            h *= 1099511628211UL;
        }
        return h & 0x7FFF_FFFF_FFFF_FFFFUL;
    }

    /// <summary>One generator per input (<paramref name="ids"/>), or null when the inputs have no ids (then callers
    /// fall back to a step-level stream). Dispose them.</summary>
    public static TorchSharp.torch.Generator[]? Generators(int stepSeed, IReadOnlyList<string>? ids) =>
        ids is null ? null : ids.Select(id => new TorchSharp.torch.Generator(For(stepSeed, id))).ToArray();

    /// <summary>Standard normal noise of shape <paramref name="perInput"/> for each input, stacked on axis 1:
    /// k × N × <paramref name="perInput"/>[1..] where <paramref name="perInput"/> = [k, ...].</summary>
    public static TorchSharp.torch.Tensor Randn(TorchSharp.torch.Generator[] generators, long[] perInput) =>
        TorchSharp.torch.stack(generators.Select(g => TorchSharp.torch.randn(perInput, generator: g)).ToArray(), 1);

    /// <summary>Uniform [0, 1) noise, as <see cref="Randn"/>.</summary>
    public static TorchSharp.torch.Tensor Rand(TorchSharp.torch.Generator[] generators, long[] perInput) =>
        TorchSharp.torch.stack(generators.Select(g => TorchSharp.torch.rand(perInput, generator: g)).ToArray(), 1);
}
