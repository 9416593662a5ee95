using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using Microsoft.Extensions.DependencyInjection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Evaluation.Tests;

/// <summary>A CNN whose output depends only on one 8×8 region (rows and columns 4..11) of a 28×28 grey image:
/// z = 20 · mean_region(relu(conv1×1(x))) − 5, logits (z, −z). The true attribution is the region.</summary>
public sealed class RegionNet : nn.Module<Tensor, Tensor>
{
    public const int Lo = 4, Hi = 12;
    readonly Conv2d conv;
    readonly ReLU relu;
    readonly Linear fc;
    readonly Tensor region;

    public RegionNet() : base("RegionNet")
    {
        conv = nn.Conv2d(1, 1, 1);
        relu = nn.ReLU();
        fc = nn.Linear(1, 2);
        using (no_grad())
        {
            conv.weight!.fill_(1); conv.bias!.fill_(0);
            fc.weight!.copy_(tensor(new float[] { 20, -20 }).view(2, 1));
            fc.bias!.copy_(tensor(new float[] { -5, 5 }));
        }
        region = zeros(1, 1, 28, 28);
        region[TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(Lo, Hi), TensorIndex.Slice(Lo, Hi)] = 1f;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = relu.call(conv.call(x));
        var s = (h * region).sum([1, 2, 3]) / ((Hi - Lo) * (Hi - Lo));
        return scope.MoveToOuter(fc.call(s.unsqueeze(1)));
    }

    /// <summary>Images: the region uniform in [0.5, 1], the rest black (seeded). N×1×28×28.</summary>
    public static float[] Images(int n, int seed)
    {
        var r = new Random(seed);
        var px = new float[n * 28 * 28];
        for (int i = 0; i < n; i++)
            for (int y = Lo; y < Hi; y++)
                for (int x = Lo; x < Hi; x++) px[i * 784 + y * 28 + x] = 0.5f + 0.5f * (float)r.NextDouble();
        return px;
    }
}

/// <summary>A CNN that calls one ReLU module twice (as torchvision's ResNet blocks do): relu(conv x), an identity
/// layer that shows the first call's output, relu(conv2 ·), then the region's mean into a linear layer.</summary>
public sealed class ReuseNet : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv, conv2;
    readonly ReLU relu;
    readonly Identity first;
    readonly Linear fc;

    public ReuseNet() : base("ReuseNet")
    {
        conv = nn.Conv2d(1, 1, 1);
        conv2 = nn.Conv2d(1, 1, 1);
        relu = nn.ReLU();
        first = nn.Identity();
        fc = nn.Linear(1, 2);
        using (no_grad())
        {
            conv.weight!.fill_(1); conv.bias!.fill_(-0.2f);
            conv2.weight!.fill_(0.5f); conv2.bias!.fill_(0.1f);
            fc.weight!.copy_(tensor(new float[] { 20, -20 }).view(2, 1));
            fc.bias!.copy_(tensor(new float[] { -5, 5 }));
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = relu.call(conv2.call(first.call(relu.call(conv.call(x)))));
        var s = h[TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(RegionNet.Lo, RegionNet.Hi), TensorIndex.Slice(RegionNet.Lo, RegionNet.Hi)].mean([1, 2, 3]);
        return scope.MoveToOuter(fc.call(s.unsqueeze(1)));
    }
}

public sealed class RegionModelAdapter : ModelAdapter<NoOptions>
{
    public override IModel Load(NoOptions options, ModelLoadContext context) =>
        new TorchModel(new RegionNet(), new InputSpec(1, 28, 28, [0f], [1f]), ["region", "other"]);
}

/// <summary>The region CNN declaring a normalisation (mean 0.5, std 0.25), so that pixel-space and model-space fills
/// differ; the data are given in model space as before.</summary>
public sealed class ReuseModelAdapter : ModelAdapter<NoOptions>
{
    public override IModel Load(NoOptions options, ModelLoadContext context) =>
        new TorchModel(new ReuseNet(), new InputSpec(1, 28, 28, [0f], [1f]), ["region", "other"]);
}

public sealed class ScaledRegionModelAdapter : ModelAdapter<NoOptions>
{
    public override IModel Load(NoOptions options, ModelLoadContext context) =>
        new TorchModel(new RegionNet(), new InputSpec(1, 28, 28, [0.5f], [0.25f]), ["region", "other"]);
}

/// <summary>Uniform random maps (seeded): the chance-level control.</summary>
public sealed class RandomMap : AttributionAnalysis<NoOptions>
{
    Generator? _gen;
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    public override string ArtifactName => "random-map";
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        _gen ??= new Generator((ulong)input.Context.Seed + 1);
        var (_, _, sel) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        var x = input.Input;
        return new AttributionResult(rand([x.shape[0], x.shape[2], x.shape[3]], generator: _gen), sel);
    }
}

/// <summary>Sobel edge magnitude of the input: ignores the model (Adebayo et al.'s edge-detector control).</summary>
public sealed class SobelMap : AttributionAnalysis<NoOptions>
{
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    public override string ArtifactName => "sobel-map";
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        var (_, _, sel) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        var sx = tensor(new float[] { -1, 0, 1, -2, 0, 2, -1, 0, 1 }).view(1, 1, 3, 3);
        var sy = sx.transpose(2, 3).contiguous();
        var grey = input.Input.mean([1], keepdim: true);
        var gx = nn.functional.conv2d(grey, sx, padding: [1, 1]);
        var gy = nn.functional.conv2d(grey, sy, padding: [1, 1]);
        return new AttributionResult((gx * gx + gy * gy).sqrt()[.., 0], sel);
    }
}

/// <summary>Sobel maps that count the images they explain (<see cref="Rows"/>): tests of how often a metric runs the
/// method it evaluates. Used by one test only (the count is global).</summary>
public sealed class CountingMap : AttributionAnalysis<NoOptions>
{
    public static long Rows;
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    public override string ArtifactName => "counting-map";
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        Interlocked.Add(ref Rows, input.Input.shape[0]);
        return new SobelMap().Attribute(options, input);
    }
}

public sealed class TestComponents : IPluginRegistrar
{
    public void Register(IServiceCollection services) => services
        .AddLoupeModel<RegionModelAdapter>("region-test", "test CNN that looks at one region only")
        .AddLoupeModel<ReuseModelAdapter>("reuse-test", "test CNN that calls one ReLU module twice")
        .AddLoupeModel<ScaledRegionModelAdapter>("region-test-scaled", "the region CNN with normalisation mean 0.5, std 0.25 (test)")
        .AddLoupeAnalysis<RandomMap>("random-map", "random maps (test control)")
        .AddLoupeAnalysis<SobelMap>("sobel-map", "Sobel edge maps (test control)")
        .AddLoupeAnalysis<CountingMap>("counting-map", "Sobel edge maps that count the images explained (test)")
        .AddLoupeAnalysis<FixtureMap>("fixture-map", "maps from a fixture file (test)")
        .AddLoupeAnalysis<ZeroMap>("zero-map", "maps of zeros for any input (test: a method whose map vanishes)");
}

public sealed record FixtureMapOptions
{
    public string Path { get; init; } = "";
}

/// <summary>Maps of zeros (N×H×W) for any input, with the target's selection: a method whose map vanishes, as a
/// Grad-CAM's does when its ReLU zeroes every value.</summary>
public sealed class ZeroMap : AttributionAnalysis<NoOptions>
{
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    public override string ArtifactName => "zero-map";
    public override AttributionResult Attribute(NoOptions options, AttributionInput input)
    {
        var (_, _, sel) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        return new AttributionResult(zeros(input.Input.shape[0], input.Input.shape[2], input.Input.shape[3]), sel);
    }
}

/// <summary>Maps read from a fixture (row i of an N×H×W or N×C×H×W .npy for input id i, as the npy source numbers them).</summary>
public sealed class FixtureMap : AttributionAnalysis<FixtureMapOptions>
{
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    public override string ArtifactName => "fixture-map";
    /// <summary>Calls of <see cref="Attribute"/> (tests of map reuse).</summary>
    public static int Calls;
    public override AttributionResult Attribute(FixtureMapOptions options, AttributionInput input)
    {
        Interlocked.Increment(ref Calls);
        var (_, _, sel) = Explain.Scores(input.Context, input.Input, input.Selection, input.Slot);
        var all = Npy.Read(options.Path);
        var ids = input.Ids ?? throw new LoupeException("fixture-map explains original inputs only");
        // N×H×W, or N×C×H×W (per-channel maps).
        long hw = all.Shape.Skip(1).Aggregate(1L, (p, d) => p * d);
        var rows = ids.SelectMany(id => all.Data.AsSpan((int)(int.Parse(id) * hw), (int)hw).ToArray()).ToArray();
        return new AttributionResult(tensor(rows, [ids.Length, .. all.Shape.Skip(1)]), sel);
    }
}
