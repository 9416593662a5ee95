using System.Globalization;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Core;

/// <summary><c>--shard i/n</c>: shard <see cref="Index"/> (0-based) of <see cref="Count"/>.</summary>
public sealed record ShardRequest(int Index, int Count)
{
    /// <summary>Parses <c>i/n</c>; null with a message saying what is wrong.</summary>
    public static ShardRequest? Parse(string text, out string? error)
    {
        error = null;
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var i)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var n))
        {
            error = $"--shard '{text}': expected INDEX/COUNT with whole numbers, e.g. --shard 0/4 (indices are 0-based)";
            return null;
        }
        if (n < 1) { error = $"--shard '{text}': the shard count must be at least 1"; return null; }
        if (i >= n) { error = $"--shard '{text}': the index must be between 0 and {n - 1} (indices are 0-based: 0/{n} … {n - 1}/{n})"; return null; }
        return new ShardRequest(i, n);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Index}/{Count}";

    /// <summary>The contiguous rows of this shard: the dataset's batches of <paramref name="batch"/> inputs are dealt
    /// out in order, ⌊i·B/n⌋ … ⌊(i+1)·B/n⌋ − 1 (B batches in all). Whole batches keep every batch a shard runs identical
    /// to the unsharded run's, so results agree bit for bit; null when there are fewer batches than shards.</summary>
    public ShardInfo? Rows(long total, int batch)
    {
        long batches = (total + batch - 1) / batch;
        if (batches < Count) return null;
        long b0 = Index * batches / Count, b1 = (Index + 1) * batches / Count;
        long first = b0 * batch, end = Math.Min(total, b1 * batch);
        return new ShardInfo(Index, Count, first, end - first);
    }
}

/// <summary>The rows of one shard of a data source: a <see cref="IRangeDataSource"/> slice when the source has one,
/// else the source streamed past the rows before the shard. Records the ids it delivered (for the manifest).</summary>
internal sealed class ShardedDataSource(IDataSource inner, ShardInfo shard) : IDataSource
{
    readonly IDataSource? _slice = (inner as IRangeDataSource)?.Slice(shard.FirstRow, shard.Rows);

    /// <summary>Ids of the shard, in order, once a pass has read all of it.</summary>
    public IReadOnlyList<string>? Ids { get; private set; }
    public long? Count => shard.Rows;
    public bool Preprocessed => inner.Preprocessed;
    public IEnumerable<string> Files => inner.Files;
    public bool? HasLabels => inner.HasLabels;

    public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
    {
        var ids = new List<string>();
        var batches = _slice?.Read(spec, batchSize, cancellation) ?? Skip(inner.Read(spec, batchSize, cancellation));
        foreach (var b in batches)
        {
            ids.AddRange(b.Ids);
            yield return b;
        }
        if (ids.Count != shard.Rows)
            throw new LoupeException($"shard {shard.Index}/{shard.Count} should hold rows {shard.FirstRow}..{shard.FirstRow + shard.Rows - 1}, but the data source delivered {ids.Count}");
        Ids ??= ids;
    }

    /// <summary>Streams the whole source and keeps the rows of the shard (batches cut at the shard's edges).</summary>
    IEnumerable<DataBatch> Skip(IEnumerable<DataBatch> all)
    {
        long row = 0, end = shard.FirstRow + shard.Rows;
        foreach (var b in all)
        {
            long n = b.Ids.Length, from = Math.Max(row, shard.FirstRow) - row, to = Math.Min(row + n, end) - row;
            row += n;
            if (to <= from) { b.Dispose(); if (row >= end) yield break; continue; }
            if (from == 0 && to == n) { yield return b; continue; }
            using (b)
            {
                DataBatch part;
                using (NewDisposeScope())
                    part = new DataBatch(b.Ids[(int)from..(int)to], b.Pixels.narrow(0, from, to - from).clone().DetachFromDisposeScope(),
                        b.Labels?[(int)from..(int)to], b.Masks?.narrow(0, from, to - from).clone().DetachFromDisposeScope());
                yield return part;
            }
            if (row >= end) yield break;
        }
    }

    public void Dispose()
    {
        _slice?.Dispose();
        inner.Dispose();
    }
}

/// <summary>The <c>--shard</c> part of preparing a run.</summary>
public static partial class PipelineRunner
{
    /// <summary>Steps that cannot run on a part of the dataset, one error each (at the step's <c>uses:</c>).</summary>
    static IEnumerable<PipelineError> RefuseUnshardable(PipelineSpec spec, List<PreparedStep> steps, ShardRequest shard)
    {
        foreach (var s in steps)
        {
            var why = s.Analysis is IShardable shardable ? shardable.Unshardable(s.Options)
                : s.Analysis.Requirements.UsesData ? "its result is not a map over the inputs that 'loupe merge' can combine (it needs the whole dataset at once)"
                : "it does not read the data, so there is nothing to shard";
            if (why is not null)
                yield return new PipelineError(spec.File, (int)s.Spec.UsesMark.Line, (int)s.Spec.UsesMark.Column,
                    $"step '{s.Spec.Id}' ({s.Spec.Uses}) cannot run under --shard {shard}: {why}; run it in a pipeline without --shard (docs/scale-out.md)");
        }
    }

    /// <summary>The shard's rows of <paramref name="data"/>, in whole batches of the least common multiple of the
    /// batch sizes the steps use.</summary>
    static (IDataSource Data, ShardInfo Rows) Slice(PipelineSpec spec, List<PreparedStep> steps, IDataSource? data, ShardRequest shard)
    {
        PipelineError At(string message) => new(spec.File, (int)(spec.Data?.Mark.Line ?? 0), (int)(spec.Data?.Mark.Column ?? 0), message);
        if (data is null) throw new PipelineException([At($"--shard {shard}: the pipeline has no 'data' section to shard")]);
        if (data.Count is not { } total)
            throw new PipelineException([At($"data '{spec.Data!.Uses}': --shard needs a data source that knows how many inputs it has; this one does not")]);
        static long Gcd(long a, long b) => b == 0 ? a : Gcd(b, a % b);
        var batch = steps.Select(s => (long)(s.Spec.BatchSize ?? spec.BatchSize)).Append(spec.BatchSize).Aggregate((a, b) => a / Gcd(a, b) * b);
        if (batch > int.MaxValue) throw new PipelineException([At($"--shard {shard}: the steps' batch sizes have no common multiple below {int.MaxValue}")]);
        var rows = shard.Rows(total, (int)batch)
            ?? throw new PipelineException([At($"--shard {shard}: the data has {total} input(s), {(total + batch - 1) / batch} batch(es) of {batch}; use at most that many shards (or a smaller batch_size)")]);
        return (new ShardedDataSource(data, rows), rows);
    }
}
