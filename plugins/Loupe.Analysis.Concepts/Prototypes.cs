using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Analysis.Concepts;

/// <summary>Options shared by the techniques that work in a layer's embedding.</summary>
public record EmbeddingOptions
{
    /// <summary>Layer.</summary>
    [Required, LayerName, Description("layer whose output, averaged over H×W when spatial, is the embedding (e.g. relu3, gap)")]
    public string Layer { get; init; } = "";
}

/// <summary>The dataset's embedding at a layer (N×D float32), ids and labels, from the run's shared layer pass.</summary>
public sealed class Embedding(Tensor x, string[] ids, long[]? labels) : IDisposable
{
    /// <summary>N×D.</summary>
    public Tensor X { get; } = x;
    /// <summary>Ids in row order.</summary>
    public string[] Ids { get; } = ids;
    /// <summary>Labels when every batch had them.</summary>
    public long[]? Labels { get; } = labels;

    /// <summary>The shared pass (average over H×W for spatial layers, flattened otherwise).</summary>
    public static LayerPass Pass(string layer) => new(layer, $"loupe.concepts.embedding:{layer}", () => new Consumer());

    /// <summary>Collects the embedding through the run's shared pass.</summary>
    public static Embedding Collect(IAnalysisContext ctx, string layer) => ((Consumer)ctx.RunLayerPass(Pass(layer))).Result();

    /// <inheritdoc/>
    public void Dispose() => X.Dispose();

    sealed class Consumer : ILayerConsumer
    {
        readonly List<float[]> _rows = [];
        readonly List<string> _ids = [];
        readonly List<long> _labels = [];
        bool _labelled = true;
        long _d;

        public void Consume(InputBatch batch, Tensor a)
        {
            using var scope = NewDisposeScope();
            var f = (a.dim() == 4 ? a.mean([2, 3]) : a.flatten(1)).to(ScalarType.Float32).cpu().contiguous();
            _d = f.shape[1];
            _rows.Add(f.ToArray<float>());
            _ids.AddRange(batch.Ids);
            if (batch.Labels is { } l) _labels.AddRange(l); else _labelled = false;
        }

        public Embedding Result() => _ids.Count == 0 ? throw new LoupeException("the data source produced no inputs")
            : new(tensor(_rows.SelectMany(r => r).ToArray(), [_ids.Count, _d]), [.. _ids], _labelled ? [.. _labels] : null);
    }

    /// <summary>Second pass: display tiles of the inputs at these rows (only those images are kept).</summary>
    public static Dictionary<int, RgbImage> Tiles(IAnalysisContext ctx, IEnumerable<int> rows)
    {
        var wanted = new HashSet<int>(rows);
        var result = new Dictionary<int, RgbImage>();
        int row = 0;
        foreach (var batch in ctx.Batches())
        {
            if (wanted.Count == result.Count) break;
            for (int i = 0; i < batch.Ids.Length; i++)
                if (wanted.Contains(row + i)) { using var p = batch.Pixels[i].cpu(); result[row + i] = ConceptPlots.Tile(p); }
            row += batch.Ids.Length;
        }
        return result;
    }
}

/// <summary>Options of <c>prototypes</c>.</summary>
public sealed record PrototypesOptions : EmbeddingOptions
{
    /// <summary>Prototypes per class.</summary>
    [Range(1, 256), Description("prototypes per class")]
    public int Prototypes { get; init; } = 6;
    /// <summary>Criticisms per class.</summary>
    [Range(0, 256), Description("criticisms per class")]
    public int Criticisms { get; init; } = 4;
    /// <summary>Kernel width.</summary>
    [Range(0.0, 1e12), Description("RBF kernel exp(−γ‖a−b‖²) γ; 0: 1 / median of the class's squared distances")]
    public double Gamma { get; init; }
}

/// <summary>MMD-critic (Kim, Khanna and Koyejo 2016) per class in a layer's embedding. Prototypes: greedily, the input
/// that most increases J(S) = 2/(n|S|) Σ_{i, j∈S} k(x_i, x_j) − 1/|S|² Σ_{j,l∈S} k(x_j, x_l) (ties: lower row);
/// criticisms: the other inputs with the largest |witness| w(x) = 1/n Σ_i k(x, x_i) − 1/|S| Σ_{j∈S} k(x, x_j) (no
/// log-det regulariser). The class is the label. Outputs <c>prototypes.json</c>, <c>prototypes.npy</c> /
/// <c>criticisms.npy</c> (classes × m dataset rows, NaN when a class has fewer inputs) and <c>prototypes.png</c>.</summary>
public sealed class Prototypes : Analysis<PrototypesOptions>, IPlansLayerPasses
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward | ModelCapabilities.LayerActivations, UsesTarget: false);

    /// <inheritdoc/>
    public IEnumerable<LayerPass> PlanLayerPasses(object options) => [Embedding.Pass(((PrototypesOptions)options).Layer)];

    /// <summary>MMD-critic on the rows of <paramref name="x"/> (n×d): prototype and criticism row indices.</summary>
    public static (int[] Prototypes, int[] Criticisms, double Gamma) Select(Tensor x, int m, int c, double gamma)
    {
        using var scope = NewDisposeScope();
        int n = (int)x.shape[0];
        if (gamma <= 0)
        {
            var d = Stats.SquaredDistances(x, x);
            var off = d.masked_select(ones(n, n, dtype: ScalarType.Bool).triu(1));
            double med = off.numel() == 0 ? 1 : Median(off.ToArray<double>());
            gamma = 1 / Math.Max(med, 1e-12);
        }
        var k = Stats.Rbf(x, x, gamma).ToArray<double>();
        var colMean = new double[n];
        for (int i = 0; i < n; i++) { double s = 0; for (int j = 0; j < n; j++) s += k[i * n + j]; colMean[i] = s / n; }
        var chosen = new List<int>();
        double selfSum = 0;          // Σ_{j,l∈S} k
        var crossS = new double[n];  // Σ_{j∈S} k(i, j)
        for (int step = 0; step < Math.Min(m, n); step++)
        {
            int best = -1; double bestJ = double.NegativeInfinity;
            int size = chosen.Count + 1;
            for (int cand = 0; cand < n; cand++)
            {
                if (chosen.Contains(cand)) continue;
                double fit = 0; foreach (var j in chosen) fit += colMean[j]; fit += colMean[cand];
                double self = selfSum + 2 * crossS[cand] + k[cand * n + cand];
                double jv = 2.0 / size * fit - self / ((double)size * size);
                if (jv > bestJ + 1e-12) { bestJ = jv; best = cand; }
            }
            selfSum += 2 * crossS[best] + k[best * n + best];
            for (int i = 0; i < n; i++) crossS[i] += k[i * n + best];
            chosen.Add(best);
        }
        var witness = Enumerable.Range(0, n).Select(i => colMean[i] - crossS[i] / chosen.Count).ToArray();
        var critics = Enumerable.Range(0, n).Where(i => !chosen.Contains(i)).OrderByDescending(i => Math.Abs(witness[i])).ThenBy(i => i).Take(c).ToArray();
        return ([.. chosen], critics, gamma);
    }

    /// <summary>numpy's median: the mean of the two middle values for an even count.</summary>
    static double Median(double[] v)
    {
        Array.Sort(v);
        return v.Length % 2 == 1 ? v[v.Length / 2] : 0.5 * (v[v.Length / 2 - 1] + v[v.Length / 2]);
    }

    /// <inheritdoc/>
    public override void Run(PrototypesOptions options, IAnalysisContext ctx)
    {
        using var emb = Embedding.Collect(ctx, options.Layer);
        var labels = emb.Labels ?? throw new LoupeException("prototypes: the data has no labels; MMD-critic summarises each class of labelled inputs");
        var classes = labels.Distinct().OrderBy(l => l).ToArray();
        int m = options.Prototypes, c = options.Criticisms;
        var protoArr = Enumerable.Repeat(float.NaN, classes.Length * m).ToArray();
        var critArr = Enumerable.Repeat(float.NaN, classes.Length * Math.Max(c, 1)).ToArray();
        var json = new List<object>();
        var rows = new List<(string Label, int[] Protos, int[] Critics)>();
        for (int ci = 0; ci < classes.Length; ci++)
        {
            var members = Enumerable.Range(0, labels.Length).Where(i => labels[i] == classes[ci]).ToArray();
            using var xs = emb.X.index_select(0, tensor(members.Select(i => (long)i).ToArray()));
            var (p, cr, gamma) = Select(xs, m, c, options.Gamma);
            var protos = p.Select(i => members[i]).ToArray();
            var critics = cr.Select(i => members[i]).ToArray();
            for (int j = 0; j < protos.Length; j++) protoArr[ci * m + j] = protos[j];
            for (int j = 0; j < critics.Length; j++) critArr[ci * Math.Max(c, 1) + j] = critics[j];
            string name = classes[ci] < ctx.Labels.Count ? ctx.Labels[(int)classes[ci]] : $"class {classes[ci]}";
            json.Add(new { @class = name, class_index = classes[ci], inputs = members.Length, gamma, prototypes = protos.Select(i => emb.Ids[i]), criticisms = critics.Select(i => emb.Ids[i]), prototype_rows = protos, criticism_rows = critics });
            rows.Add((name, protos, critics));
        }
        ctx.Output.Raw("prototypes", null, new NdArray(protoArr, [classes.Length, m]));
        ctx.Output.Raw("criticisms", null, new NdArray(critArr, [classes.Length, Math.Max(c, 1)]));
        ctx.Output.Json("prototypes", new { layer = options.Layer, classes = json });
        var tiles = Embedding.Tiles(ctx, rows.SelectMany(r => r.Protos.Concat(r.Critics)));
        var cells = rows.Select(r => (IReadOnlyList<RgbImage?>)r.Protos.Select(i => (RgbImage?)tiles[i]).Concat([null]).Concat(r.Critics.Select(i => (RgbImage?)Frame(tiles[i]))).ToList()).ToList();
        var caps = rows.Select(r => (IReadOnlyList<string?>)r.Protos.Select(i => (string?)emb.Ids[i]).Concat([null]).Concat(r.Critics.Select(i => (string?)emb.Ids[i])).ToList()).ToList();
        var titles = Enumerable.Range(0, m).Select(j => $"prototype {j + 1}").Concat([""]).Concat(Enumerable.Range(0, c).Select(j => $"criticism {j + 1}")).ToList();
        ctx.Output.Display("prototypes", null, Figure.Table(cells, titles, rows.Select(r => r.Label).ToList(),
            $"MMD-critic in {options.Layer}: per class the inputs that best summarise it (prototypes) and those it covers worst (criticisms, framed)", caps));
    }

    /// <summary>An orange frame inside the border (criticisms, queries).</summary>
    public static RgbImage Frame(RgbImage img)
    {
        var px = (byte[])img.Pixels.Clone();
        int f = Math.Max(2, img.Width / 24);
        for (int y = 0; y < img.Height; y++)
            for (int x = 0; x < img.Width; x++)
                if (x < f || y < f || x >= img.Width - f || y >= img.Height - f) { int o = (y * img.Width + x) * 3; px[o] = 230; px[o + 1] = 80; px[o + 2] = 20; }
        return img with { Pixels = px };
    }
}
