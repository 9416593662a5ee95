using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Synthesis.Tests;

/// <summary>activation-atlas: gridding and averaging against a hand-computed layout, the direction objective's value
/// and gradient against the closed form, the icons' optimisation, the dataset sample, and configs/atlas.yaml end to end.</summary>
public class AtlasTests
{
    static AtlasTests() => _ = Env.RepoRoot;

    [Fact]
    public void GridAndCellMeansMatchAHandComputedLayout()
    {
        // A 2×2 grid over [0,1]²; rows count from the top (large v), a coordinate on a cell edge goes to the upper cell,
        // and 1.0 to the last one.
        (double U, double V, float[] X)[] points =
        [
            (0.1, 0.9, [1, 0, 2]),  // top-left
            (0.4, 0.6, [3, 0, 0]),  // top-left
            (0.9, 0.9, [5, 5, 5]),  // top-right
            (0.5, 0.5, [1, 1, 1]),  // top-right (edge: ⌊0.5·2⌋ = 1 in both axes)
            (1.0, 0.0, [2, 4, 6]),  // bottom-right (u = 1 is clamped into the last column)
            (0.7, 0.2, [0, 2, 0]),  // bottom-right
            (0.7, 0.3, [1, 0, 0]),  // bottom-right
            (0.2, 0.3, [9, 9, 9]),  // bottom-left: alone, dropped by min_count 2
        ];
        var cells = ActivationAtlas.Grid(points.Select(p => p.U).ToArray(), points.Select(p => p.V).ToArray(),
            points.SelectMany(p => p.X).ToArray(), 3, grid: 2, minCount: 2);
        Assert.Equal(3, cells.Count);
        void Cell(int k, int row, int column, int[] members, double[] mean)
        {
            Assert.Equal((row, column), (cells[k].Row, cells[k].Column));
            Assert.Equal(members, cells[k].Members);
            Assert.Equal(mean, cells[k].Mean);
        }
        Cell(0, 0, 0, [0, 1], [2, 0, 1]);
        Cell(1, 0, 1, [2, 3], [3, 3, 3]);
        Cell(2, 1, 1, [4, 5, 6], [1, 2, 2]);
        // min_count 1 keeps the lone point; min_count 4 drops everything.
        Assert.Equal(4, ActivationAtlas.Grid(points.Select(p => p.U).ToArray(), points.Select(p => p.V).ToArray(), points.SelectMany(p => p.X).ToArray(), 3, 2, 1).Count);
        Assert.Empty(ActivationAtlas.Grid(points.Select(p => p.U).ToArray(), points.Select(p => p.V).ToArray(), points.SelectMany(p => p.X).ToArray(), 3, 2, 4));
    }

    [Fact]
    public void LayoutNormalisationClipsOutliersAsCarter()
    {
        // numpy: np.percentile([1, 2, 3, 4], 25) = 1.75 (linear interpolation).
        Assert.Equal(1.75, ActivationAtlas.Percentile([1, 2, 3, 4], 25), 1e-12);
        // 0..99 and an outlier 1000: P1 = 1, P99 = 99, margin 0.1·98 → clip to [−8.8, 108.8]; then min 0, max 108.8.
        var values = Enumerable.Range(0, 100).Select(i => (double)i).Append(1000).ToArray();
        var n = ActivationAtlas.Normalize(values, 1, 99, 0.1);
        Assert.Equal(0.0, n[0], 1e-12);
        Assert.Equal(50 / 108.8, n[50], 1e-12);
        Assert.Equal(1.0, n[100], 1e-12);
        // Without clipping it is a plain min-max scaling; a constant axis sits in the middle.
        Assert.Equal(new[] { 0.0, 0.25, 1.0 }, ActivationAtlas.Normalize([2, 3, 6], 0, 100, 0));
        Assert.Equal(new[] { 0.5, 0.5 }, ActivationAtlas.Normalize([7, 7], 1, 99, 0.1));
    }

    /// <summary>∂/∂a of ⟨a, v⟩ · max(cos, 0.1)^p, cos = ⟨a, v⟩ / ((ε + ‖a‖)(ε + ‖v‖)), by hand.</summary>
    static (double Value, double[] Gradient) Hand(double[] a, double[] v, double p)
    {
        const double eps = 1e-4;
        double d = a.Zip(v, (x, y) => x * y).Sum(), na = Math.Sqrt(a.Sum(x => x * x)), nv = Math.Sqrt(v.Sum(x => x * x));
        double A = eps + na, B = eps + nv, c = d / (A * B);
        if (p == 0) return (d, v);
        if (c <= 0.1) return (d * Math.Pow(0.1, p), v.Select(x => x * Math.Pow(0.1, p)).ToArray());
        var dc = a.Select((x, i) => v[i] / (A * B) - d / (A * A * B) * x / na).ToArray();
        return (d * Math.Pow(c, p), a.Select((_, i) => v[i] * Math.Pow(c, p) + d * p * Math.Pow(c, p - 1) * dc[i]).ToArray());
    }

    [Theory]
    [InlineData(4.0, true)]
    [InlineData(1.0, true)]
    [InlineData(0.0, true)]
    [InlineData(4.0, false)]
    public void DirectionObjectiveValueAndGradientMatchTheClosedForm(double p, bool centre)
    {
        using var scope = NewDisposeScope();
        var v = new double[] { 1.0, 2.0, -0.5 };
        var a = (rand([2, 3, 3, 3], generator: new Generator(11), dtype: ScalarType.Float64) + 0.05).requires_grad_(true);
        // Row 1 points against v at the centre (and on average): its cosine is below the 0.1 floor.
        using (no_grad()) a[1].mul_(tensor(new double[] { -1, -1, 1 }).view(3, 1, 1));
        var s = DirectionNeuron.Values(a, tensor(v).view(1, 3).expand(2, 3), p, centre);
        var g = CheckedOps.Grad([s.sum()], [a])[0];
        for (int r = 0; r < 2; r++)
        {
            var vec = centre ? a[r, .., 1, 1].detach().ToArray<double>() : a[r].detach().mean([1, 2]).ToArray<double>();
            var (value, grad) = Hand(vec, v, p);
            Assert.Equal(value, s[r].item<double>(), 1e-10);
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < 3; y++)
                    for (int x = 0; x < 3; x++)
                    {
                        double expected = centre ? (y == 1 && x == 1 ? grad[ch] : 0) : grad[ch] / 9;
                        Assert.Equal(expected, g[r, ch, y, x].item<double>(), 1e-10);
                    }
        }
        // Row 1 really is on the floor when p > 0: value = dot · 0.1^p.
        if (p > 0)
        {
            var vec = centre ? a[1, .., 1, 1].detach().ToArray<double>() : a[1].detach().mean([1, 2]).ToArray<double>();
            Assert.Equal(vec.Zip(v, (x, y) => x * y).Sum() * Math.Pow(0.1, p), s[1].item<double>(), 1e-10);
        }
    }

    /// <summary>A model whose layer "feat" is its input and whose output is the input's mean per channel.</summary>
    sealed class IdentityLayerModel(int c, int h, int w) : IModel
    {
        Tensor? _last;
        public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.Gradients | ModelCapabilities.LayerActivations;
        public InputSpec DefaultInput => new(c, h, w, Enumerable.Repeat(0f, c).ToArray(), Enumerable.Repeat(1f, c).ToArray());
        public IReadOnlyList<string>? DefaultLabels => null;
        public IReadOnlyList<LayerInfo> Layers => [new("feat", "Identity")];
        public Tensor Forward(Tensor input) { _last = input; return input.mean([2, 3]); }
        public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => new Cap(this);
        public Tensor? GetParameter(string name) => null;
        public IReadOnlyList<string> ParameterNames => [];
        public void Dispose() { }
        sealed class Cap(IdentityLayerModel m) : ILayerCapture
        {
            public Tensor this[string layer] => layer == "feat" ? m._last! : throw new KeyNotFoundException(layer);
            public bool TryGet(string layer, out Tensor activation) { activation = m._last!; return layer == "feat"; }
            public void Dispose() { }
        }
    }

    [Fact]
    public void BatchedIconObjectivesEqualTheirOneByOneValues()
    {
        // Synthesizer.Scores takes all atlas directions at once; each row must get its own direction's value.
        using var scope = NewDisposeScope();
        var model = new IdentityLayerModel(3, 5, 5);
        var x = rand([3, 3, 5, 5], generator: new Generator(4));
        var objectives = new Objective[]
        {
            new DirectionNeuron("feat", [1, 0, 0], 4), new DirectionNeuron("feat", [0.2f, -1, 3], 4), new DirectionNeuron("feat", [1, 1, 1], 4),
        };
        var rows = tensor(new long[] { 2, 0, 1 });
        var got = Synthesizer.Scores(model, model.DefaultInput, objectives, ["feat"], x, rows).ToArray<float>();
        model.Forward(x);
        using var cap = model.Capture(["feat"], false);
        var oi = new ObjectiveInput(x.mean([2, 3]), l => cap[l]);
        for (int r = 0; r < 3; r++)
            Assert.Equal(objectives[(int)rows[r].item<long>()].Evaluate(oi)[r].item<float>(), got[r], 1e-5);
    }

    [Fact]
    public void IconOptimisationRaisesEachCellsObjectiveOnTheDemoCnn()
    {
        using var scope = NewDisposeScope();
        var model = new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(
            new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = "fashion-cnn", Weights = Env.Demo("fashion-cnn.safetensors") },
            new ModelLoadContext(Env.RepoRoot, 0));
        // Two cells' directions: relu3's centre vectors of two real images (a trouser-like and a bag-like input would do;
        // these are the first two shipped test images).
        var images = FirstImages(2);
        float[][] directions;
        using (var cap = model.Capture(["relu3"], false))
        {
            using var _ = no_grad();
            model.Forward(model.DefaultInput.Normalize(images));
            directions = [cap["relu3"][0, .., 3, 3].ToArray<float>(), cap["relu3"][1, .., 3, 3].ToArray<float>()];
        }
        var objectives = directions.Select(d => (Objective)new DirectionNeuron("relu3", d, 4)).ToList();
        var o = new ActivationMaxOptions { Steps = 48, LearningRate = 0.05, Jitter = 1 };
        var r = Synthesizer.Optimize(model, model.DefaultInput, objectives, o, seed: 3);
        for (int i = 0; i < 2; i++)
            Assert.True(r.Final[i] > r.Start[i] + 1 && r.Final[i] > 2 * Math.Abs(r.Start[i]), $"cell {i}: objective {r.Start[i]} → {r.Final[i]}");
        // The recorded final values are the objective of the returned images, computed independently.
        using (var cap = model.Capture(["relu3"], false))
        {
            using var _ = no_grad();
            model.Forward(model.DefaultInput.Normalize(r.Images));
            for (int i = 0; i < 2; i++)
            {
                var a = cap["relu3"][i, .., 3, 3].to(ScalarType.Float64).ToArray<double>();
                double expected = Hand(a, directions[i].Select(x => (double)x).ToArray(), 4).Value;
                Assert.True(Math.Abs(expected - r.Final[i]) <= 1e-4 * Math.Max(1, Math.Abs(expected)), $"cell {i}: recorded {r.Final[i]}, recomputed {expected}");
            }
        }
    }

    static Tensor FirstImages(int n)
    {
        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(Env.Samples("data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz")), System.IO.Compression.CompressionMode.Decompress);
        var buf = new byte[16 + 784 * n];
        gz.ReadExactly(buf);
        return tensor(buf.Skip(16).Select(b => b / 255f).ToArray()).view(n, 1, 28, 28);
    }

    static AtlasSample.Sample Feed(Tensor acts, string[] ids, int batch, int max, AtlasPosition position, bool reverse = false)
    {
        var s = new AtlasSample(position, max, seed: 5);
        var order = Enumerable.Range(0, ids.Length).ToArray();
        if (reverse) Array.Reverse(order);
        foreach (var chunk in order.Chunk(batch))
        {
            using var scope = NewDisposeScope();
            var idx = tensor(chunk.Select(i => (long)i).ToArray());
            s.Consume(new InputBatch(chunk.Select(i => ids[i]).ToArray(), empty(0), empty(0), chunk.Select(i => (long)i % 3).ToArray()), acts.index_select(0, idx));
        }
        return s.Result();
    }

    [Fact]
    public void SampleIsTheSmallestKeysWithTheirPositionsWhateverTheBatchesAndOrder()
    {
        using var scope = NewDisposeScope();
        var acts = randn([40, 4, 3, 5], generator: new Generator(8));
        var ids = Enumerable.Range(0, 40).Select(i => $"img-{i:D3}").ToArray();
        var a = Feed(acts, ids, 7, 12, AtlasPosition.Random);
        var b = Feed(acts, ids, 40, 12, AtlasPosition.Random, reverse: true);
        // The 12 inputs with the smallest InputSeeds.For(5, id), in dataset order.
        var expected = ids.OrderBy(id => InputSeeds.For(5, id)).Take(12).OrderBy(id => id, StringComparer.Ordinal).ToArray();
        Assert.Equal(expected, a.Ids);
        Assert.Equal(expected, b.Ids.OrderBy(id => id, StringComparer.Ordinal).ToArray());
        for (int k = 0; k < 12; k++)
        {
            int i = Array.IndexOf(ids, a.Ids[k]);
            // Position: splitmix64(key) mod (H·W), row-major; the vector is the activation there.
            long p = (long)(AtlasSample.Mix(InputSeeds.For(5, ids[i])) % 15);
            Assert.Equal(((int)(p / 5), (int)(p % 5)), (a.Y[k], a.X[k]));
            Assert.Equal(acts[i, .., p / 5, p % 5].ToArray<float>(), a.Vectors.AsSpan(k * 4, 4).ToArray());
            Assert.Equal(i % 3, a.Labels![k]);
            int kb = Array.IndexOf(b.Ids, a.Ids[k]);
            Assert.Equal((a.Y[k], a.X[k]), (b.Y[kb], b.X[kb]));
        }
        // Mean position: the spatial average; more room than inputs keeps all of them.
        var mean = Feed(acts, ids, 9, 100, AtlasPosition.Mean);
        Assert.Equal(40, mean.Ids.Length);
        Assert.Equal(acts[17].mean([1, 2]).ToArray<float>(), mean.Vectors.AsSpan(17 * 4, 4).ToArray());
        Assert.All(mean.Y, y => Assert.Equal(-1, y));
    }

    [Fact]
    public void SampleMemoryStaysFlatOnceFull()
    {
        // 20,000 inputs of 256 channels × 7×7 through a sample of 500: after the sample is full, neither the managed heap
        // (after a full collection) nor the live tensors grow from the first quarter of the pass to the last.
        var s = new AtlasSample(AtlasPosition.Random, 500, seed: 1);
        var heap = new List<long>();
        var live = new List<long>();
        for (int b = 0; b < 200; b++)
        {
            using (var scope = NewDisposeScope())
            {
                var acts = rand([100, 256, 7, 7], generator: new Generator((ulong)b));
                s.Consume(new InputBatch(Enumerable.Range(b * 100, 100).Select(i => $"in-{i}").ToArray(), empty(0), empty(0), null), acts);
            }
            if (b % 10 == 9) { heap.Add(GC.GetTotalMemory(true)); live.Add(Loupe.Abstractions.Toolkit.TensorAccounting.Live); }
        }
        Assert.Equal(500, s.Result().Ids.Length);
        // Samples 1-5 (inputs 2,000-10,000) against 16-20 (16,000-20,000).
        double first = heap.Skip(1).Take(5).Average(), last = heap.Skip(15).Average();
        Assert.True(last <= 1.05 * first + (1 << 19), $"managed heap {first / 1048576:F2} MiB → {last / 1048576:F2} MiB: {string.Join(" ", heap.Select(h => (h / 1048576.0).ToString("F2")))}");
        Assert.True(live.Skip(15).Max() <= live.Skip(1).Take(5).Max(), $"live tensors: {string.Join(" ", live)}");
    }

    [Fact]
    public void AtlasStepsRideTheSharedLayerPassAndShareOnePredictionPass()
    {
        // Two atlases (random and mean positions, the second without icons) and embeddings of relu3 over 200 inputs, from a source that records
        // every read: one shared layer pass feeds all three, the first atlas reads once more for its sample's
        // predictions (the second reuses them: same max and sample_seed, so the same rows), and the host reads once for
        // its own predictions. Three reads, not five.
        var path = Env.DemoPipeline("""
              - { id: atlas, uses: activation-atlas, with: { layer: relu3, grid: 5, steps: 4, tsne_iterations: 250 } }
              - { id: atlas-mean, uses: activation-atlas, with: { layer: relu3, position: mean, grid: 5, steps: 0, tsne_iterations: 250 } }
              - { id: emb, uses: embeddings, with: { layer: relu3 } }
            """, data: $$"""
            data:
              uses: repeated-idx
              with: { images: {{Env.Samples("data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz")}}, count: 200, tag: atlas-reads }
            settings:
              batch_size: 50
            """);
        var r = Loupe.Testing.HostRuns.Run(path, Path.Combine(Path.GetDirectoryName(path)!, "out"), registrars: [new Loupe.Testing.RepeatedIdx.Registrar()]);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        var reads = Loupe.Testing.RepeatedIdx.Samples["atlas-reads"].GroupBy(s => s.Read).Select(g => g.Count()).ToList();
        Assert.Equal([4, 4, 4], reads);
        // Both atlases hold the same 200 inputs; their vectors differ (a position vs the mean), the mean ones equal embeddings' features.
        var mean = Env.Artifact(r, "atlas-mean/vectors.npy");
        var features = Env.Artifact(r, "emb/features.npy");
        Assert.Equal(features.Shape, mean.Shape);
        for (int i = 0; i < mean.Data.Length; i++) Assert.Equal(features.Data[i], mean.Data[i], 1e-5);
        Assert.NotEqual(mean.Data, Env.Artifact(r, "atlas/vectors.npy").Data);
        // steps: 0 draws the map without icons.
        Assert.False(File.Exists(Path.Combine(r.OutDir!, "atlas-mean", "icons.npy")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "atlas-mean", "atlas.png")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "atlas", "icons.npy")));
    }

    [Fact]
    public void AtlasConfigWritesTheAtlasAndCellsAgreeWithTheVectors()
    {
        var outDir = Path.Combine(Env.TempDir(), "run");
        var r = Loupe.Testing.HostRuns.Run(Path.Combine(Env.RepoRoot, "configs", "atlas.yaml"), outDir);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        foreach (var png in new[] { "atlas/atlas.png", "atlas/atlas-classes.png", "atlas-mean/atlas.png", "atlas-mean/atlas-classes.png" })
            Assert.True(new FileInfo(Path.Combine(outDir, png)).Length > 5000, png);
        var vectors = Env.Artifact(r, "atlas/vectors.npy");
        Assert.Equal([500L, 128], vectors.Shape);
        var layout = Env.Artifact(r, "atlas/layout.npy");
        Assert.All(layout.Data, x => Assert.InRange(x, 0f, 1f));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "atlas", "cells.json")))!;
        var cells = json["cells"]!.AsArray();
        var means = Env.Artifact(r, "atlas/cells.npy");
        var icons = Env.Artifact(r, "atlas/icons.npy");
        Assert.Equal([(long)cells.Count, 128], means.Shape);
        Assert.Equal([(long)cells.Count, 1, 28, 28], icons.Shape);
        var ids = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "atlas", "sample.json")))!["ids"]!.AsArray().Select(x => x!.GetValue<string>()).ToList();
        int raised = 0;
        for (int k = 0; k < cells.Count; k++)
        {
            var members = cells[k]!["ids"]!.AsArray().Select(x => ids.IndexOf(x!.GetValue<string>())).ToArray();
            Assert.True(members.Length >= 3);
            Assert.Equal(members.Length, cells[k]!["count"]!.GetValue<int>());
            // The cell's grid position is the one its members' layout coordinates fall in.
            foreach (var i in members)
            {
                Assert.Equal(Math.Min((int)Math.Floor(layout.Data[2 * i] * 10.0), 9), cells[k]!["column"]!.GetValue<int>());
                Assert.Equal(9 - Math.Min((int)Math.Floor(layout.Data[2 * i + 1] * 10.0), 9), cells[k]!["row"]!.GetValue<int>());
            }
            // Within 1e-4, not "equal to 4 decimal places": xUnit rounds both sides, so two values 1e-8 apart
            // straddling a rounding boundary (0.23545000 and 0.23544999) failed once.
            for (int j = 0; j < 128; j++)
                Assert.Equal(members.Average(i => (double)vectors.Data[i * 128 + j]), means.Data[k * 128 + j], 1e-4);
            Assert.NotNull(cells[k]!["predicted_label"]);
            if (cells[k]!["objective_final"]!.GetValue<double>() > cells[k]!["objective_start"]!.GetValue<double>()) raised++;
        }
        Assert.Equal(cells.Count, raised);
        Assert.Equal(cells.Count, (int)Loupe.Testing.HostRuns.Metric(r, "atlas", "cells"));
    }
}
