using System.Globalization;
using Google.Protobuf;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>Parameters written in place — what the randomisation metrics do — reach the forward: the linear layers that
/// torch.onnx exports as MatMul by an anonymous constant plus Add of the module's bias are listed under their PyTorch
/// names, shaped as PyTorch holds them, and writing them changes the fused plan's forward as PyTorch's model changes
/// (tests/fixtures/onnx/make_linear_weight_fixtures.py: Quantus's reset_parameters of each such layer, and new values
/// for attention's packed in-projection, with PyTorch's logits after them). The same through a weight the file
/// transposes (a Transpose of a named initializer, folded at load): the folded value follows its parameter. A bias-free
/// layer (Swin's patch merging reduction) is named by its MatMul's module scope.</summary>
public class LinearWeightTests
{
    static readonly string Folder = Env.Fixture("linear-weights");

    public static TheoryData<string> Models() => ["vit", "swin", "convnext"];

    /// <summary>(weight, bias, out, in) per line of NAME.txt.</summary>
    static List<(string Weight, string Bias, long Out, long In)> Pairs(string name) =>
        File.ReadAllLines(Path.Combine(Folder, name + ".txt")).Select(l => l.Split(' '))
            .Select(p => (p[0], p[1], long.Parse(p[2], CultureInfo.InvariantCulture), long.Parse(p[3], CultureInfo.InvariantCulture))).ToList();

    /// <summary>Writes PyTorch's new values into the model's parameters by their PyTorch names, then compares the
    /// logits of the family input with PyTorch's after the same change.</summary>
    static void WriteAndCompare(OnnxModel model, string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        var values = Npy.Read(Path.Combine(Folder, name + ".values.npy")).Data;
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]);
        using var _ = no_grad();
        Assert.True(Env.RelL2(Env.Data(model.Forward(x)), r.Logits.Data) <= 1e-5, $"{name}: logits before the change");
        int at = 0;
        foreach (var (weight, bias, rows, cols) in Pairs(name))
        {
            var w = model.GetParameter(weight);
            Assert.True(w is not null, $"{name}: no parameter '{weight}' (parameters: {string.Join(", ", model.ParameterNames.Where(p => p.Contains("MatMul") || p.EndsWith("weight")).Take(12))})");
            Assert.Equal([rows, cols], w!.shape);
            w.copy_(tensor(values.AsSpan(at, (int)(rows * cols)).ToArray(), [rows, cols]));
            at += (int)(rows * cols);
            if (bias == "-") continue;   // a bias-free layer, named by its MatMul's module scope
            var b = model.GetParameter(bias);
            Assert.NotNull(b);
            b!.copy_(tensor(values.AsSpan(at, (int)rows).ToArray(), [rows]));
            at += (int)rows;
        }
        Assert.Equal(values.Length, at);
        var want = Npy.Read(Path.Combine(Folder, name + ".logits.npy")).Data;
        var fused = Env.Data(model.Forward(x));
        Assert.True(Env.RelL2(fused, want) <= 1e-5, $"{name}: logits after the change, rel-L2 {Env.RelL2(fused, want)} (before it: {Env.RelL2(r.Logits.Data, want)})");
        // The graph form (LRP, full-grad; ConvNeXt has one, the transformers not) reads the same tensors.
        if (name == "convnext")
        {
            var g = Env.Data(((IModelGraphSource)model).Graph().Run(x)[^1]);
            double err = g.Zip(want).Max(p => Math.Abs(p.First - p.Second)) / want.Max(v => Math.Abs(v));
            Assert.True(err <= 1e-4, $"{name}: the graph form's logits after the change differ by {err:E2} (relative to the largest)");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void AnonymousMatMulWeightsAreTheirModulesAndWritingThemChangesTheForward(string name)
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx") });
        // One tensor, one name: the anonymous constants that became a module's weight are no longer listed.
        var anonymous = model.ParameterNames.Where(p => p.StartsWith("onnx::MatMul", StringComparison.Ordinal)).ToList();
        Assert.Empty(anonymous);
        WriteAndCompare(model, name);
    }

    [Fact]
    public void ReadingAParameterLeavesTheFusedPlanAsItIs()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, "vit.onnx") });
        var w = model.ReadParameter("encoder.layers.encoder_layer_0.mlp.0.weight");
        Assert.Equal([32L, 16], w!.shape);
        Assert.Same(w, ModelParameters.Read(model, "encoder.layers.encoder_layer_0.mlp.0.weight"));
    }

    /// <summary>vit.onnx with each anonymous MatMul constant replaced by Transpose of an initializer named as PyTorch
    /// names the weight (out × in), as exporters that keep the module's parameter write it.</summary>
    static string TransposedWeights()
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(FamilyTests.Folder, "vit.onnx")));
        var g = m.Graph;
        var nodes = g.Node.ToList();
        int changed = 0;
        foreach (var mm in nodes.Where(n => n.OpType == "MatMul").ToList())
        {
            var init = g.Initializer.FirstOrDefault(i => i.Name == mm.Input[1]);
            var add = nodes.FirstOrDefault(n => n.OpType == "Add" && n.Input.Contains(mm.Output[0]));
            string? bias = add?.Input.FirstOrDefault(i => i != mm.Output[0]);
            if (init is null || bias is null || !bias.EndsWith("bias", StringComparison.Ordinal)) continue;
            long rows = init.Dims[0], cols = init.Dims[1];
            var data = init.RawData.Length > 0 ? MemoryMarshalFloats(init.RawData.ToByteArray()) : init.FloatData.ToArray();
            var t = new float[data.Length];
            for (long i = 0; i < rows; i++)
                for (long j = 0; j < cols; j++) t[j * rows + i] = data[i * cols + j];
            var named = new TensorProto { Name = bias[..^4] + "weight", DataType = init.DataType, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.AsSpan())) };
            named.Dims.Add([cols, rows]);
            g.Initializer.Remove(init);
            g.Initializer.Add(named);
            var transpose = new NodeProto { OpType = "Transpose", Name = named.Name + "_T" };
            transpose.Input.Add(named.Name);
            transpose.Output.Add(named.Name + "_T");
            nodes.Insert(nodes.IndexOf(mm), transpose);
            mm.Input[1] = transpose.Output[0];
            changed++;
        }
        Assert.Equal(6, changed);
        g.Node.Clear();
        g.Node.Add(nodes);
        var path = Path.Combine(Env.TempDir(), "vit_transposed_weights.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    static float[] MemoryMarshalFloats(byte[] bytes) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray();

    [Fact]
    public void AWeightFoldedAtLoadFollowsItsParameter()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = TransposedWeights() });
        WriteAndCompare(model, "vit");
    }
}
