using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>Each operator form (fixtures/onnx/ops/*.onnx, ops-tensor/*.onnx, ops-detection/*.onnx) through the interpreter against ONNX Runtime.</summary>
public class OperatorTests
{
    static IEnumerable<string> OpFiles() => new[] { "ops", "ops-tensor", "ops-detection", "ops-newer", "ops-contrib" }
        .SelectMany(d => Directory.GetFiles(Path.Combine(Env.FixtureRoot, d), "*.onnx")).Order(StringComparer.Ordinal);

    /// <summary>"folder/name" of each operator model.</summary>
    public static TheoryData<string> OpModels()
    {
        var data = new TheoryData<string>();
        foreach (var f in OpFiles())
            data.Add(Path.GetRelativePath(Env.FixtureRoot, f)[..^".onnx".Length]);
        return data;
    }

    [Theory]
    [MemberData(nameof(OpModels))]
    public void MatchesOnnxRuntime(string name)
    {
        var path = Env.Fixture($"{name}.onnx");
        long[] shape = [2, 3, 8, 8];
        var x = Env.SinInput(2 * 3 * 8 * 8, 1.5, 0.1);
        var (expected, expectedShape) = Env.OrtRun(path, x, shape);
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path, FlattenOutput = false });
        using var scope = NewDisposeScope();
        var input = tensor(x, shape).requires_grad_(true);
        var y = model.Forward(input);
        Assert.Equal(expectedShape, y.shape);
        var err = Env.RelL2(Env.Data(y), expected);
        Assert.True(err <= 1e-5, $"{name}: rel L2 {err:E2}");
        // Differentiable: the gradient reaches the input for every operator form.
        var g = CheckedOps.Grad([y.sum()], [input], allowUnused: true)[0];
        Assert.True(g is not null && !g.IsInvalid && g.shape.SequenceEqual(input.shape), $"{name}: no gradient to the input");
    }

    [Fact]
    public void EveryOperatorOfTheBriefHasAFixture()
    {
        var used = OpFiles().Concat(Directory.GetFiles(Env.Fixture("ops-quant"), "*.onnx"))   // QuantizationTests' fixtures
            .Concat(Directory.GetFiles(Env.Fixture("ops-qop"), "*.onnx"))                         // QOperatorTests'
            .SelectMany(f => global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(f)).Graph.Node.Select(n => n.OpType)).ToHashSet();
        var missing = Ops.Supported.Concat(Ops.SupportedContrib).Concat(OnnxContrib.Expanded.Where(op => op != "BiasAdd")).Concat(OnnxContrib.QOperators)
            .Where(op => !used.Contains(op)).ToList();
        Assert.True(missing.Count == 0, "operators without a fixture: " + string.Join(", ", missing));
    }

    [Fact]
    public void GradientsMatchFiniteDifferencesThroughAsymmetricPadsAndPools()
    {
        // The CNTK-style asymmetric pads are emulated with explicit padding: check the gradient numerically too.
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Env.Fixture("ops/avgpool_asym_pads_cip0.onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(3 * 8 * 8), [1, 3, 8, 8], dtype: ScalarType.Float32).requires_grad_(true);
        var w = tensor(Env.SinInput(model.Forward(x.detach()).numel(), 1, 0.3));
        var g = CheckedOps.Grad([(model.Forward(x) * w.view(1, -1)).sum()], [x])[0];
        using var _ = no_grad();
        const double eps = 1e-2;
        foreach (var idx in new long[] { 0, 7, 63, 64 + 9, 191 })
        {
            var xp = x.detach().clone(); xp.view(-1)[idx] += eps;
            var xm = x.detach().clone(); xm.view(-1)[idx] -= eps;
            double fd = ((model.Forward(xp) * w.view(1, -1)).sum().item<float>() - (model.Forward(xm) * w.view(1, -1)).sum().item<float>()) / (2 * eps);
            Assert.Equal(fd, g.view(-1)[idx].item<float>(), 1e-2);
        }
    }
}
