using Loupe.Testing;
using Loupe.Abstractions;
using Loupe.Analysis.Embedding;
using static TorchSharp.torch;

namespace Loupe.Embedding.Tests;

/// <summary>Streaming top-k against an exhaustive top-k, and receptive-field boxes against gradient support.</summary>
public class MaxPatchesTests
{
    /// <summary>The top-k selection used per batch equals the first k of a stable descending sort, ties included:
    /// rows of few distinct values (ReLU zeros), an all-zero row, distinct values, k = 1 and k = the row length.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(300)]
    public void TopKSelectionEqualsTheStableSortPrefix(int k)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var ties = randint(0, 3, [4, 300], generator: g).to(ScalarType.Float32) * (rand([4, 300], generator: g) > 0.7f);
        var flat = cat([ties, zeros(1, 300), randn([2, 300], generator: g)], 0);
        var (v, i) = MaxPatches.FirstInStableOrder(flat, k);
        var (sv, si) = flat.sort(1, descending: true, stable: true);
        Assert.Equal(sv.narrow(1, 0, k).ToArray<float>(), v.contiguous().ToArray<float>());
        Assert.Equal(si.narrow(1, 0, k).contiguous().ToArray<long>(), i.contiguous().ToArray<long>());
    }

    [Fact]
    public void StreamingTopKEqualsExhaustiveTopK()
    {
        _ = Env.RepoRoot;
        using var model = Env.DemoModel();
        using var gen = new TorchSharp.torch.Generator(5);
        using var pixels = rand([23, 1, 28, 28], generator: gen);
        int[] channels = [0, 3, 17, 63];
        int k = 7;
        var (ch, top, ids) = MaxPatches.StreamTopK(new TensorContext(model, pixels, 5), "relu2", channels, k);
        Assert.Equal(channels, ch);
        Assert.Equal(23, ids.Count);

        // Exhaustive: one forward over everything, all (value, image, y, x) sorted with the same total order.
        using var scope = NewDisposeScope();
        using var capture = model.Capture(["relu2"], forGradients: false);
        using (no_grad()) model.Forward(model.DefaultInput.Normalize(pixels));
        var a = capture["relu2"];
        long h = a.shape[2], w = a.shape[3];
        for (int c = 0; c < channels.Length; c++)
        {
            var vals = a[.., channels[c]].contiguous().ToArray<float>();
            var all = vals.Select((v, f) => new TopEntry(v, (int)(f / (h * w)), (int)(f % (h * w) / w), (int)(f % w))).Order().Take(k).ToArray();
            Assert.Equal(all, top[c]);
        }
    }

    [Fact]
    public void TopKHeapKeepsTheBestUnderAnyArrivalOrder()
    {
        var rng = new Random(2);
        var entries = Enumerable.Range(0, 500).Select(i => new TopEntry(rng.Next(20), i / 10, i % 10, 0)).ToArray();
        var heap = new TopK(12);
        foreach (var e in entries.OrderBy(_ => rng.Next())) heap.Offer(e);
        Assert.Equal(entries.Order().Take(12).ToArray(), heap.Sorted());
    }

    [Theory]
    [InlineData("conv1", 3, 1)]
    [InlineData("pool1", 4, 2)]
    [InlineData("relu2", 8, 2)]
    [InlineData("relu3", 18, 4)]
    public void ReceptiveFieldBoxesEqualTheGradientSupport(string layer, int size, int stride)
    {
        _ = Env.RepoRoot;
        using var model = Env.DemoModel();
        var rf = ReceptiveFields.Measure(model, layer, model.DefaultInput, seed: 0);
        Assert.Equal(size, rf.Height);
        Assert.Equal(size, rf.Width);
        Assert.Equal(stride, rf.StrideY);
        Assert.Equal(stride, rf.StrideX);
        int lh = rf.LayerHeight, lw = rf.LayerWidth;
        // Corners, edges and the centre: the box of each unit equals the bounding box of its own gradient support
        // (union over 16 probes, one channel sum), measured independently of the reference unit.
        (int, int)[] units = [(0, 0), (0, lw - 1), (lh - 1, 0), (lh - 1, lw - 1), (lh / 2, 0), (1, 2), (lh / 2, lw / 2)];
        foreach (var (y, x) in units)
        {
            var support = ReceptiveFields.Bounds(ReceptiveFields.Support(model, layer, 1, 28, 28, y, x, probes: 16, seed: 11));
            Assert.NotNull(support);
            Assert.Equal(support.Value, rf.Box(y, x, 28, 28));
        }
        // The closed form for this architecture (3×3 convs with padding 1, 2×2 max-pools): unit y starts at
        // stride·y − (size − stride)/2 … e.g. relu3 (3,3) sees rows 5..22.
        if (layer == "relu3") Assert.Equal((5, 5, 23, 23), rf.Box(3, 3, 28, 28));
    }

    /// <summary>Receptive fields of TorchVision architectures (random weights, 64×64 probes): each unit's box equals the
    /// bounding box of its own gradient support, for corners, edges and the centre.</summary>
    [Theory]
    [InlineData("resnet18", "layer1")]
    [InlineData("resnet18", "layer2.0.conv1")]
    [InlineData("vgg16", "features.4")]
    [InlineData("vgg16", "features.9")]
    public void ReceptiveFieldsOfTorchVisionModelsEqualTheGradientSupport(string arch, string layer)
    {
        TorchSharp.torch.manual_seed(0);
        using var model = new Loupe.Models.TorchSharp.TorchVisionAdapter().Load(new Loupe.Models.TorchSharp.TorchVisionOptions { Architecture = arch }, new ModelLoadContext(".", 0));
        var spec = model.DefaultInput with { Height = 64, Width = 64 };
        var rf = ReceptiveFields.Measure(model, layer, spec, seed: 0);
        int lh = rf.LayerHeight, lw = rf.LayerWidth;
        (int, int)[] units = [(0, 0), (lh - 1, lw - 1), (lh / 2, lw / 2), (1, lw - 2)];
        foreach (var (y, x) in units)
        {
            var support = ReceptiveFields.Bounds(ReceptiveFields.Support(model, layer, 3, 64, 64, y, x, probes: 8, seed: 5));
            Assert.NotNull(support);
            Assert.Equal(support.Value, rf.Box(y, x, 64, 64));
        }
    }
}
