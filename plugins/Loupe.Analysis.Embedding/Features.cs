using System.ComponentModel;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Embedding;

/// <summary>How a spatial (N×C×H×W) activation becomes one feature vector per input.</summary>
public enum FeaturePool
{
    /// <summary>Global average over H×W (C features; the default).</summary>
    Avg,
    /// <summary>Global maximum over H×W (C features).</summary>
    Max,
    /// <summary>All C·H·W values, C-order.</summary>
    Flatten,
}

/// <summary>Distance between feature vectors.</summary>
public enum Metric
{
    /// <summary>Euclidean distance ‖a − b‖.</summary>
    L2,
    /// <summary>Cosine distance 1 − a·b / (‖a‖‖b‖).</summary>
    Cosine,
}

/// <summary>Options shared by every technique that works on a layer's dataset features.</summary>
public record FeatureOptions
{
    /// <summary>Layer.</summary>
    [System.ComponentModel.DataAnnotations.Required, LayerName, Description("layer whose output is the feature vector (e.g. gap, flatten, relu3)")]
    public string Layer { get; init; } = "";
    /// <summary>Pooling of 4-D layers.</summary>
    [Description("4-D layers: avg (default) or max over H×W, or flatten (C·H·W features); ignored for 2-D layers")]
    public FeaturePool Pool { get; init; } = FeaturePool.Avg;
}

/// <summary>Base of the techniques that work on a layer's dataset features: they read the run's shared dataset pass.</summary>
public abstract class FeatureAnalysis<TOptions> : Analysis<TOptions>, IPlansLayerPasses where TOptions : FeatureOptions, new()
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);
    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [Features.Pass(((TOptions)options).Layer, ((TOptions)options).Pool)];
}

/// <summary>The N×D feature matrix of a dataset at one layer (float32, CPU), with ids and labels.</summary>
public sealed class FeatureSet(Tensor features, string[] ids, long[]? labels) : IDisposable
{
    /// <summary>N×D float32.</summary>
    public Tensor X { get; } = features;
    /// <summary>Input ids, row order.</summary>
    public string[] Ids { get; } = ids;
    /// <summary>Ground-truth labels when every batch had them.</summary>
    public long[]? Labels { get; } = labels;
    /// <summary>Number of inputs.</summary>
    public int N => Ids.Length;
    /// <summary>Feature dimension.</summary>
    public int D => (int)X.shape[1];
    /// <inheritdoc/>
    public void Dispose() => X.Dispose();
}

/// <summary>Streaming feature extraction and second-pass image lookup.</summary>
public static class Features
{
    /// <summary>Pools one batch of activations to N×D.</summary>
    public static Tensor Pool(Tensor a, FeaturePool pool) => a.dim() switch
    {
        2 => a,
        4 => pool switch
        {
            FeaturePool.Avg => a.mean([2, 3]),
            FeaturePool.Max => a.amax([2, 3]),
            _ => a.flatten(1),
        },
        _ => pool == FeaturePool.Avg && a.dim() == 3 ? a.mean([2]) : a.flatten(1),
    };

    /// <summary>The shared dataset pass that folds a layer's activations into the N×D feature matrix.</summary>
    public static LayerPass Pass(string layer, FeaturePool pool) => new(layer, $"loupe.embedding.features:{layer}:{pool}", () => new Consumer(pool));

    /// <summary>The dataset's N×D features at a layer, from the run's shared pass: computed once per run for every step
    /// that asks for the same layer and pooling (embeddings, nearest-neighbours, pca, tsne), in the same forward pass
    /// as the other dataset steps (max-patches, activation statistics).</summary>
    public static FeatureSet Collect(IAnalysisContext ctx, string layer, FeaturePool pool) =>
        ((Consumer)ctx.RunLayerPass(Pass(layer, pool))).ToFeatureSet();

    /// <summary>Keeps only the pooled N×D features (never the images or the activations).</summary>
    sealed class Consumer(FeaturePool pool) : ILayerConsumer
    {
        readonly List<float[]> _chunks = [];
        readonly List<string> _ids = [];
        readonly List<long> _labels = [];
        bool _allLabelled = true;
        long _d = -1;

        public void Consume(InputBatch batch, Tensor activation)
        {
            using var scope = NewDisposeScope();
            var f = Pool(activation, pool).to(ScalarType.Float32).cpu().contiguous();
            if (_d < 0) _d = f.shape[1];
            _chunks.Add(f.ToArray<float>());
            _ids.AddRange(batch.Ids);
            if (batch.Labels is { } l) _labels.AddRange(l); else _allLabelled = false;
        }

        public FeatureSet ToFeatureSet()
        {
            if (_ids.Count == 0) throw new LoupeException("the data source produced no inputs");
            var all = new float[_chunks.Sum(c => (long)c.Length)];
            long o = 0;
            foreach (var c in _chunks) { c.CopyTo(all, o); o += c.Length; }
            return new FeatureSet(tensor(all, [_ids.Count, _d]), _ids.ToArray(), _allLabelled && _labels.Count == _ids.Count ? _labels.ToArray() : null);
        }
    }

    /// <summary>Second pass: the display pixels (C×H×W in [0,1], CPU clones) of the inputs at <paramref name="indices"/>
    /// (dataset row numbers). Only those images are kept.</summary>
    public static Dictionary<int, Tensor> PixelsAt(IAnalysisContext ctx, IEnumerable<int> indices)
    {
        var wanted = new HashSet<int>(indices);
        var result = new Dictionary<int, Tensor>();
        if (wanted.Count == 0) return result;
        int max = wanted.Max(), row = 0;
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            int n = batch.Ids.Length;
            for (int i = 0; i < n; i++)
                if (wanted.Contains(row + i)) result[row + i] = batch.Pixels[i].detach().cpu().clone().DetachFromDisposeScope();
            row += n;
            if (row > max) break;
        }
        return result;
    }

    /// <summary>Display name of a label index (the model's class name when known).</summary>
    public static string LabelName(IReadOnlyList<string> names, long label) =>
        label >= 0 && label < names.Count ? names[(int)label] : label.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Labels as float32 for <c>.npy</c>.</summary>
    public static NdArray LabelArray(long[] labels) => new(labels.Select(l => (float)l).ToArray(), [labels.Length]);

    /// <summary>Row-major float32 matrix as <see cref="NdArray"/>.</summary>
    public static NdArray Matrix(double[] data, int rows, int cols) => new(data.Select(v => (float)v).ToArray(), [rows, cols]);
}
