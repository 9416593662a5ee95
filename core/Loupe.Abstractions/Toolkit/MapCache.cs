using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>The maps an attribution step produced in this run, kept in <see cref="IAnalysisContext.RunCache"/> (managed
/// copies, up to the run's memory budget) so that a step evaluating it (a metric's <c>of:</c>) reuses them instead of
/// running the method again. Only maps of the step's own inputs and target are kept; a reader gets them only when its
/// target is described the same way, and falls back to recomputing otherwise.</summary>
public static class MapCache
{
    sealed record Entry(float[] Data, long[] Shape, long? Class, string Label, string Target, object? State, OverlayMark[]? Marks, bool ScoresProbability);
    sealed class Budget { public long Bytes; }

    static string Key(string step, string id) => $"maps/{step}/{id}";

    /// <summary>Keeps the maps of one batch of step <see cref="IAnalysisContext.StepId"/> (row i for input <paramref name="ids"/>[i]),
    /// while the run's cached maps stay within its memory budget.</summary>
    public static void Put(IAnalysisContext ctx, string[] ids, Tensor maps, TargetSelection selection)
    {
        var cache = ctx.RunCache;
        lock (cache)
        {
            if (!cache.TryGetValue("maps/bytes", out var b)) cache["maps/bytes"] = b = new Budget();
            var budget = (Budget)b;
            long bytes = maps.numel() * sizeof(float);
            if (budget.Bytes + bytes > ctx.MemoryBudgetBytes) return;
            budget.Bytes += bytes;
            using var c = maps.detach().to(ScalarType.Float32).cpu().contiguous();
            var all = c.ToArray<float>();
            long per = all.Length / Math.Max(1, ids.Length);
            var shape = c.shape.Skip(1).ToArray();
            string target = ctx.Target.Describe();
            for (int i = 0; i < ids.Length; i++)
                cache[Key(ctx.StepId, ids[i])] = new Entry(all.AsSpan((int)(i * per), (int)per).ToArray(), shape, selection.Classes?[i], selection.Labels[i], target, selection.State?[i], selection.Marks?[i], selection.ScoresProbability);
        }
    }

    /// <summary>The kept maps of step <paramref name="step"/> for <paramref name="ids"/> (N×…, in the caller's dispose
    /// scope), or null when any is missing or was made for another target than <paramref name="ctx"/>'s.</summary>
    public static AttributionResult? TryGet(IAnalysisContext ctx, string step, string[] ids)
    {
        var cache = ctx.RunCache;
        var entries = new List<Entry>();
        string target = ctx.Target.Describe();
        lock (cache)
            foreach (var id in ids)
            {
                if (!cache.TryGetValue(Key(step, id), out var e) || e is not Entry entry || entry.Target != target) return null;
                entries.Add(entry);
            }
        if (entries.Count == 0 || entries.Any(e => !e.Shape.SequenceEqual(entries[0].Shape))) return null;
        var data = entries.SelectMany(e => e.Data).ToArray();
        var classes = entries.All(e => e.Class is not null) ? entries.Select(e => e.Class!.Value).ToArray() : null;
        return new AttributionResult(tensor(data, [entries.Count, .. entries[0].Shape]), new TargetSelection(classes, entries.Select(e => e.Label).ToArray())
        {
            State = entries.Any(e => e.State is not null) ? entries.Select(e => e.State).ToArray() : null,
            Marks = entries.Any(e => e.Marks is not null) ? entries.Select(e => e.Marks).ToArray() : null,
            ScoresProbability = entries.All(e => e.ScoresProbability),
        });
    }
}
