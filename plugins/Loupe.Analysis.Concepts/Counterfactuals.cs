using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>Options of <c>counterfactual-neighbours</c>.</summary>
public sealed record CounterfactualOptions : EmbeddingOptions
{
    /// <summary>k.</summary>
    [Range(1, 256), Description("neighbours of another class per query")]
    public int K { get; init; } = 4;
    /// <summary>Queries.</summary>
    [Description("query inputs: input ids or row indices; default the first 6 inputs")]
    public string[]? Queries { get; init; }
}

/// <summary>Counterfactual neighbours: for each query, the nearest inputs (Euclidean distance in the layer's embedding,
/// ties by row) whose label differs from the query's: the closest examples the model represents alike but that belong
/// elsewhere. Outputs <c>indices.npy</c>, <c>distances.npy</c> (queries × k), <c>neighbours.json</c> and
/// <c>neighbours.png</c>.</summary>
public sealed class CounterfactualNeighbours : Analysis<CounterfactualOptions>, IPlansLayerPasses
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [Embedding.Pass(((CounterfactualOptions)options).Layer)];

    /// <inheritdoc/>
    public override void Run(CounterfactualOptions options, IAnalysisContext ctx)
    {
        using var emb = Embedding.Collect(ctx, options.Layer);
        var labels = emb.Labels ?? throw new LoupeException("counterfactual-neighbours: the data has no labels; 'another class' needs them");
        int n = emb.Ids.Length;
        var byId = emb.Ids.Select((id, i) => (id, i)).GroupBy(p => p.id).ToDictionary(g => g.Key, g => g.First().i);
        var queries = options.Queries?.Select(s => byId.TryGetValue(s, out var i) ? i
            : int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) && r >= 0 && r < n ? r
            : throw new LoupeException($"counterfactual-neighbours: option 'queries': '{s}' is neither an input id nor a row index in [0, {n - 1}]")).ToArray()
            ?? Enumerable.Range(0, Math.Min(6, n)).ToArray();
        using var scope = NewDisposeScope();
        var x = emb.X.to(ScalarType.Float64);
        var q = x.index_select(0, tensor(queries.Select(i => (long)i).ToArray()));
        var d = ((q * q).sum(1, keepdim: true) + (x * x).sum(1).unsqueeze(0) - 2 * q.MatMul(x.t())).clamp_min(0).sqrt().ToArray<double>();
        var idx = new List<int[]>();
        var dist = new List<double[]>();
        for (int r = 0; r < queries.Length; r++)
        {
            var other = Enumerable.Range(0, n).Where(i => labels[i] != labels[queries[r]]).OrderBy(i => d[r * n + i]).ThenBy(i => i).Take(options.K).ToArray();
            idx.Add(other);
            dist.Add(other.Select(i => d[r * n + i]).ToArray());
        }
        int k = idx.Max(a => a.Length);
        if (k < options.K) ctx.Warn($"counterfactual-neighbours: only {k} inputs belong to another class than some query");
        var idxArr = Enumerable.Repeat(float.NaN, queries.Length * options.K).ToArray();
        var distArr = Enumerable.Repeat(float.NaN, queries.Length * options.K).ToArray();
        for (int r = 0; r < queries.Length; r++)
            for (int j = 0; j < idx[r].Length; j++) { idxArr[r * options.K + j] = idx[r][j]; distArr[r * options.K + j] = (float)dist[r][j]; }
        ctx.Output.Raw("indices", null, new NdArray(idxArr, [queries.Length, options.K]));
        ctx.Output.Raw("distances", null, new NdArray(distArr, [queries.Length, options.K]));
        string Name(long l) => l < ctx.Labels.Count ? ctx.Labels[(int)l] : $"class {l}";
        ctx.Output.Json("neighbours", new
        {
            layer = options.Layer,
            queries = queries.Select((qi, r) => new { query = emb.Ids[qi], index = qi, label = Name(labels[qi]),
                neighbours = idx[r].Select((i, j) => new { id = emb.Ids[i], index = i, label = Name(labels[i]), distance = dist[r][j] }) }),
        });
        var tiles = Embedding.Tiles(ctx, queries.Concat(idx.SelectMany(a => a)));
        var cells = queries.Select((qi, r) => (IReadOnlyList<RgbImage?>)new[] { (RgbImage?)Prototypes.Frame(tiles[qi]) }.Concat(idx[r].Select(i => (RgbImage?)tiles[i])).ToList()).ToList();
        var caps = queries.Select((qi, r) => (IReadOnlyList<string?>)new[] { (string?)$"{emb.Ids[qi]}\n{Name(labels[qi])}" }
            .Concat(idx[r].Select((i, j) => (string?)$"{emb.Ids[i]} d={Display.Number(dist[r][j])}\n{Name(labels[i])}")).ToList()).ToList();
        ctx.Output.Display("neighbours", null, Figure.Table(cells, ["query"], null,
            $"Counterfactual neighbours in {options.Layer}: the {options.K} nearest inputs of another class (Euclidean distance), query first (framed)", caps));
    }
}
