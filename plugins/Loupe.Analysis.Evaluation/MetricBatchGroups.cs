using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Quantus's batches, for the metrics whose Quantus numbers depend on the other inputs of its batch
/// (<c>quantus_batch_size</c>).</summary>
public sealed partial class MetricBatch
{
    /// <summary>Each row's batch as Quantus would form it with a batch_size of <paramref name="size"/>: consecutive
    /// dataset rows, numbered from 0 within this batch. Warns when a group runs over this batch's edges (the run's
    /// batch_size is not a multiple of <paramref name="size"/>), where Loupe's groups are cut and Quantus's are not.</summary>
    public long[] QuantusGroups(int size, string metric)
    {
        long first = Start / size;
        bool cut = Start % size != 0 || (Start + N) % size != 0 && N == Context.BatchSize;
        if (cut)
            Context.Warn($"{metric}: quantus_batch_size {size} groups run over the step's batches of {Context.BatchSize} inputs: the groups are cut at each batch's edge, where Quantus's are not; give a batch_size (the step's or settings.batch_size) that is a multiple of {size}");
        return [.. Enumerable.Range(0, (int)N).Select(i => (Start + i) / size - first)];
    }

    /// <summary><paramref name="fill"/> (min, max or mean) over every value of each group's rows: Quantus's
    /// "black", "white" and "mean" taken over a whole batch. N×C×H×W.</summary>
    public Tensor GroupBaseline(Fill fill, long[] groups)
    {
        using var scope = NewDisposeScope();
        var rows = new Tensor[N];
        foreach (var g in groups.Distinct())
        {
            var members = Enumerable.Range(0, (int)N).Where(i => groups[i] == g).ToArray();
            var x = X.index_select(0, tensor(members.Select(i => (long)i).ToArray()));
            var v = fill switch { Fill.Min => x.min(), Fill.Max => x.max(), _ => x.to(ScalarType.Float64).mean().to(X.dtype) };
            foreach (var i in members) rows[i] = v.expand(X.shape[1], X.shape[2], X.shape[3]);
        }
        return scope.MoveToOuter(stack(rows).contiguous());
    }
}
