using Loupe.Abstractions;

namespace Loupe.Analysis.Embedding;

/// <summary>Options of <c>embeddings</c>.</summary>
public sealed record EmbeddingsOptions : FeatureOptions;

/// <summary>Features of one layer for the whole data source, streamed batch by batch: <c>features.npy</c> (N×D float32),
/// <c>ids.json</c> (row order) and <c>labels.npy</c> (float32, when the source has labels).</summary>
public sealed class Embeddings : FeatureAnalysis<EmbeddingsOptions>, IShardable, IDeclaresMetrics
{
    /// <inheritdoc/>
    public IReadOnlyList<string> MetricNames => ["inputs", "dimensions"];

    /// <inheritdoc/>
    public override void Run(EmbeddingsOptions options, IAnalysisContext ctx)
    {
        using var fs = Features.Collect(ctx, options.Layer, options.Pool);
        ctx.Output.Raw("features", null, NdArray.FromTensor(fs.X));
        ctx.Output.Json("ids", fs.Ids);
        if (fs.Labels is { } l) ctx.Output.Raw("labels", null, Features.LabelArray(l));
        ctx.Output.Metric("inputs", fs.N);
        ctx.Output.Metric("dimensions", fs.D);
    }

    /// <summary>Shards: features, ids and labels are rows, concatenated in dataset order.</summary>
    public void Merge(IShardMerge merge)
    {
        var x = merge.Rows("features");
        merge.Concat("ids");
        if (merge.Has("labels", "npy")) merge.Rows("labels");
        merge.Output.Metric("inputs", x.Shape[0]);
        merge.Output.Metric("dimensions", x.Shape[1]);
    }
}
