using System.Collections.Concurrent;
using Loupe.Abstractions;
using Loupe.Analysis.Decisions;
using Loupe.Models.Onnx;
using Loupe.Testing;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>Graphs that ONNX Runtime optimised and saved (<c>SessionOptions.optimized_model_filepath</c>), made here from
/// every exported torchvision family: at ORT_ENABLE_EXTENDED they hold its fused operators (FusedConv, FusedGemm,
/// FusedMatMul, BiasGelu, Gelu, QuickGelu, SimplifiedLayerNormalization, LayerNormalization below opset 17), which
/// <see cref="OnnxContrib"/> expands at load. The onnx backend gives PyTorch's logits and input gradients on them, the
/// same module paths, and the same LRP, Guided Backprop and DeepLift maps as on the exported graph; the onnx-runtime
/// backend runs them too; ORT_ENABLE_ALL's machine-specific layout operators are refused by name.</summary>
public class OrtOptimisedGraphTests
{
    static readonly ConcurrentDictionary<string, string> Saved = new();
    static readonly string Dir = Env.TempDir();

    /// <summary>The fixture <paramref name="source"/> as ONNX Runtime saves it after optimising at <paramref name="level"/>.</summary>
    public static string Optimised(string source, GraphOptimizationLevel level) => Saved.GetOrAdd($"{source}|{level}", _ =>
    {
        var path = Path.Combine(Dir, $"{Path.GetFileNameWithoutExtension(source)}.{level}.onnx");
        using var options = new SessionOptions { GraphOptimizationLevel = level, OptimizedModelFilePath = path, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using (new InferenceSession(source, options)) { }
        return path;
    });

    static string Family(string name, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_EXTENDED) =>
        Optimised(Path.Combine(FamilyTests.Folder, name + ".onnx"), level);

    /// <summary>A family's reference, its export and the same graph saved by ONNX Runtime, both on the onnx backend.</summary>
    static (FamilyTests.Reference, IModel Exported, IModel Saved) ExportedAndSaved(string name) =>
        (FamilyTests.Reference.Read(FamilyTests.Folder, name), Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx") }),
         Env.LoadOnnx(new OnnxOptions { Path = Family(name) }));

    static IEnumerable<string> Operators(string path) => global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Node
        .Select(n => (n.Domain.Length == 0 ? "" : n.Domain + ".") + n.OpType);

    [Theory]
    [MemberData(nameof(FamilyTests.Families), MemberType = typeof(FamilyTests))]
    public void ExtendedGraphsGivePyTorchsLogitsAndInputGradients(string name)
    {
        var path = Family(name);
        Assert.Contains(Operators(path), op => op.StartsWith(OnnxContrib.Domain + ".", StringComparison.Ordinal));   // ONNX Runtime fused something
        FamilyTests.Compare(path, FamilyTests.Reference.Read(FamilyTests.Folder, name), name);
    }

    [Theory]
    [InlineData("vit_op13")]
    [InlineData("convnext_op13")]
    [InlineData("mobilenet_v3")]
    public void BasicGraphsGivePyTorchsLogitsAndInputGradients(string name) =>
        FamilyTests.Compare(Family(name, GraphOptimizationLevel.ORT_ENABLE_BASIC), FamilyTests.Reference.Read(FamilyTests.Folder, name), name);

    [Theory]
    [InlineData("resnet")]
    [InlineData("vit")]
    [InlineData("efficientnet")]
    [InlineData("swin_op13")]
    public void TheOnnxRuntimeBackendRunsThemToo(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        using var model = Env.LoadOrt(new OnnxOptions { Path = Family(name) });
        using var scope = NewDisposeScope();
        var y = model.Forward(tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]));
        double err = Env.Data(y).Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / r.Logits.Data.Max(v => Math.Abs(v));
        Assert.True(err <= 1e-4, $"{name}: logits differ by {err:E2}");
    }

    /// <summary>The expansion names nodes as the exporter did (a FusedConv keeps its Conv's name, its ReLU takes the name
    /// in its output's value), so every module path of the export is a layer of the saved graph and holds the same
    /// values (ONNX Runtime renames a few values, so the value a path names may have another name). Not ConvNeXt: ONNX
    /// Runtime's transpose optimiser moves its permutes, so some of its modules are gone or hold another layout.</summary>
    [Theory]
    [InlineData("resnet")]
    [InlineData("vgg_bn")]
    [InlineData("mobilenet_v2")]
    [InlineData("efficientnet")]
    [InlineData("densenet")]
    [InlineData("regnet")]
    public void ModulePathsNameTheSameValues(string name)
    {
        var (r, exported, saved) = ExportedAndSaved(name);
        using var _ = exported;
        using var __ = saved;
        var modules = exported.Layers.Where(l => l.Kind.StartsWith("module", StringComparison.Ordinal)).Select(l => l.Name).ToArray();
        var after = saved.Layers.Where(l => l.Kind.StartsWith("module", StringComparison.Ordinal)).Select(l => l.Name).ToHashSet();
        Assert.True(modules.Length > 5);
        Assert.DoesNotContain(modules, m => !after.Contains(m));
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]);
        using var a = exported.Capture(modules, forGradients: false);
        using var b = saved.Capture(modules, forGradients: false);
        exported.Forward(x);
        saved.Forward(x);
        foreach (var m in modules)
        {
            Assert.Equal(a[m].shape, b[m].shape);
            Assert.True(Env.RelL2(Env.Data(b[m]), Env.Data(a[m])) <= 1e-5, $"{name}: module {m} holds other values");
        }
    }

    static float[] Map(IModel model, Tensor x, Func<AttributionInput, AttributionResult> method)
    {
        using var scope = NewDisposeScope();
        var ctx = new TensorContext(model, x, (int)x.shape[0], new Top1Target());
        return Env.Data(method(new AttributionInput(ctx, x, null)).Map);
    }

    /// <summary>The ReLUs, clips and sigmoids ONNX Runtime fused into convolutions are nodes again: Guided Backprop's
    /// ReLU rule, DeepLift's rescale rule (ReLU, sigmoid) and LRP's graph form see them as in the export.</summary>
    [Theory]
    [InlineData("resnet")]
    [InlineData("vgg")]
    [InlineData("mobilenet_v2")]
    [InlineData("efficientnet")]
    public void RuleBasedMapsEqualThoseOfTheExport(string name)
    {
        var (r, exported, saved) = ExportedAndSaved(name);
        using var _ = exported;
        using var __ = saved;
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]);
        var methods = new (string Name, Func<AttributionInput, AttributionResult> Run)[]
        {
            ("guided-backprop", i => new GuidedBackprop().Attribute(new NoOptions(), i)),
            ("deeplift", i => new DeepLift().Attribute(new DeepLiftOptions(), i)),
            ("lrp", i => new Lrp().Attribute(new LrpOptions { Composite = LrpComposite.EpsilonPlus }, i)),
        };
        foreach (var (method, run) in methods)
        {
            if (method == "lrp" && name == "efficientnet") continue;   // LRP has no rule for squeeze-excitation's Mul (refused in either graph)
            var a = Map(exported, x, run);
            var b = Map(saved, x, run);
            Assert.True(Env.RelL2(b, a) <= 1e-4, $"{name} {method}: {Env.RelL2(b, a):E2} from the export's map");
        }
    }

    [Fact]
    public void LayoutOperatorsOfOrtEnableAllAreRefusedByName()
    {
        var path = Family("resnet", GraphOptimizationLevel.ORT_ENABLE_ALL);
        var e = Assert.Throws<LoupeException>(() => Env.LoadOnnx(new OnnxOptions { Path = path }).Dispose());
        Assert.Contains("com.microsoft.nchwc", e.Message);
        Assert.Contains("ORT_ENABLE_EXTENDED", e.Message);
        // onnx-runtime refuses it too, unless the pipeline trusts the file.
        Assert.Contains("contrib_operators: true", Assert.Throws<LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = path }).Dispose()).Message);
        using var model = Env.LoadOrt(new OnnxOptions { Path = path, ContribOperators = true });
        using var scope = NewDisposeScope();
        Assert.Equal([2L, 10], model.Forward(tensor(Env.SinInput(2L * 3 * 64 * 64), [2, 3, 64, 64])).shape);
    }
}
