using System.Globalization;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>A graph exported for a batch of one (input 1×3×S×S, the 1 written into its reshapes and expands: what
/// torch.onnx.export writes without dynamic axes, tests/fixtures/onnx/make_batch_one_fixtures.py) on a batch of three:
/// both backends run it row by row, with PyTorch's logits; the onnx backend's input gradient is PyTorch's, and a
/// captured layer is one 3×… tensor the output depends on (Grad-CAM's gradient reaches it). A batch-of-one export that
/// runs batched as it runs row by row (a CNN: Flatten and Gemm take any batch) keeps the batched run.</summary>
public class BatchOfOneTests
{
    static string Folder => Env.Fixture("batch-one");

    static (int Size, long[] Classes, NdArray Logits, NdArray Grad) Reference(string name)
    {
        var kv = File.ReadAllLines(Path.Combine(Folder, name + ".txt")).Select(l => l.Split(' ', 2)).ToDictionary(p => p[0], p => p[1]);
        return (int.Parse(kv["size"], CultureInfo.InvariantCulture), kv["classes"].Split(' ').Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray(),
            Npy.Read(Path.Combine(Folder, name + ".logits.npy")), Npy.Read(Path.Combine(Folder, name + ".grad.npy")));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ABatchOfThreeRunsAsPyTorchOnBothBackends(bool ort)
    {
        var r = Reference("vit");
        var options = new OnnxOptions { Path = Path.Combine(Folder, "vit.onnx") };
        using var model = ort ? Env.LoadOrt(options) : Env.LoadOnnx(options);
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(3L * 3 * r.Size * r.Size), [3, 3, r.Size, r.Size]).requires_grad_(!ort);
        var y = model.Forward(x);
        Assert.Equal(r.Logits.Shape, y.shape);
        double err = Env.Data(y).Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / r.Logits.Data.Max(v => Math.Abs(v));
        Assert.True(err <= 1e-4, $"logits differ by {err:E2}");
        if (ort) return;
        var g = CheckedOps.Grad([y.gather(1, tensor(r.Classes).view(-1, 1)).sum()], [x])[0];
        Assert.True(Env.RelL2(Env.Data(g), r.Grad.Data) <= 1e-3, $"input gradient rel-L2 {Env.RelL2(Env.Data(g), r.Grad.Data):E2}");
    }

    [Fact]
    public void ACapturedLayerIsOneBatchTheOutputDependsOn()
    {
        var r = Reference("vit");
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(Folder, "vit.onnx") });
        const string layer = "encoder.layers.encoder_layer_1";
        Assert.Contains(model.Layers, l => l.Name == layer);
        using var scope = NewDisposeScope();
        using var capture = model.Capture([layer], forGradients: true);
        var x = tensor(Env.SinInput(3L * 3 * r.Size * r.Size), [3, 3, r.Size, r.Size]);
        var y = model.Forward(x);
        var a = capture[layer];
        Assert.Equal(3, a.shape[0]);
        var g = CheckedOps.Grad([y.gather(1, tensor(r.Classes).view(-1, 1)).sum()], [a])[0];
        Assert.Equal(a.shape, g.shape);
        // Each image's gradient is its own: image 0's logit does not depend on image 1's activations.
        var g0 = CheckedOps.Grad([model.Forward(x)[0, r.Classes[0]]], [capture[layer]])[0];
        Assert.True(g0[0].abs().sum().item<float>() > 0 && g0[1].abs().sum().item<float>() == 0);
    }

    [Fact]
    public void ABatchOfOneRunsTheGraphAsItIs()
    {
        var r = Reference("vit");
        using var model = Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(Folder, "vit.onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(3L * 3 * r.Size * r.Size), [3, 3, r.Size, r.Size]);
        var y = model.Forward(x.narrow(0, 1, 1));
        double err = Env.Data(y).Zip(r.Logits.Data.Skip(10).Take(10)).Max(p => Math.Abs(p.First - p.Second)) / r.Logits.Data.Max(v => Math.Abs(v));
        Assert.True(err <= 1e-4, $"logits differ by {err:E2}");
    }

    [Fact]
    public void TheViTRunsRowByRowAndABatchSafeCnnRunsBatched()
    {
        var warnings = new List<string>();
        var context = Env.Context with { Warn = warnings.Add };
        using (var vit = (OnnxModel)new OnnxAdapter().Load(new OnnxOptions { Path = Path.Combine(Folder, "vit.onnx") }, context))
            Assert.True(vit.RowByRow);
        Assert.Contains(warnings, w => w.Contains("vit.onnx: the graph was exported for a batch of one") && w.Contains("export with a dynamic batch"));
        // families/resnet.onnx with its input declared 1×3×64×64: the same graph, batch-safe.
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(FamilyTests.Folder, "resnet.onnx")));
        var batch = m.Graph.Input[0].Type.TensorType.Shape.Dim[0];
        batch.ClearDimParam();
        batch.DimValue = 1;
        var path = Path.Combine(Env.TempDir(), "resnet_b1.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        warnings.Clear();
        using var resnet = (OnnxModel)new OnnxAdapter().Load(new OnnxOptions { Path = path, Mean = [0, 0, 0], Std = [1, 1, 1] }, context);
        Assert.False(resnet.RowByRow);
        Assert.Empty(warnings);
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, "resnet");
        using var scope = NewDisposeScope();
        var y = resnet.Forward(tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]));
        double err = Env.Data(y).Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / r.Logits.Data.Max(v => Math.Abs(v));
        Assert.True(err <= 1e-4, $"logits differ by {err:E2}");
    }

    /// <summary>Rows of one are held to the budget a batched output is held to: a Pad to 940 MB per image passes for one
    /// image and is refused for two, by node and with what to do, before anything is allocated (found by
    /// tools/Loupe.Fuzz).</summary>
    [Fact]
    public void TheRowsOfANodeTogetherAreHeldToTheMemoryBudget()
    {
        var m = new global::Onnx.ModelProto { IrVersion = 8, Graph = new global::Onnx.GraphProto { Name = "g" } };
        m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "", Version = 13 });
        var g = m.Graph;
        var dims = new global::Onnx.TensorShapeProto();
        foreach (var d in new long[] { 1, 1, 28, 28 }) dims.Dim.Add(new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = d });
        g.Input.Add(new global::Onnx.ValueInfoProto { Name = "x", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1, Shape = dims } } });
        g.Output.Add(new global::Onnx.ValueInfoProto { Name = "y", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1 } } });
        var pads = new global::Onnx.TensorProto { Name = "pads", DataType = 7 };
        pads.Dims.Add(8);
        pads.Int64Data.Add(new long[] { 0, 0, 0, 0, 0, 599_999, 0, -14 });
        g.Initializer.Add(pads);
        g.Node.Add(new global::Onnx.NodeProto { OpType = "Pad", Name = "p", Input = { "x", "pads" }, Output = { "padded" } });
        g.Node.Add(new global::Onnx.NodeProto { OpType = "ReduceMean", Name = "r", Input = { "padded" }, Output = { "y" }, Attribute = { new global::Onnx.AttributeProto { Name = "axes", Type = global::Onnx.AttributeProto.Types.AttributeType.Ints, Ints = { 1, 2, 3 } } } });
        var path = Path.Combine(Env.TempDir(), "pad_rows_over_budget.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path });
        using var scope = NewDisposeScope();
        Assert.Equal([1L, 1], model.Forward(zeros(1, 1, 28, 28)).shape);
        var e = Assert.Throws<LoupeException>(() => model.Forward(zeros(2, 1, 28, 28)));
        Assert.Contains("Pad node 'p'", e.Message);
        // Refused by the Pad's own check before the first row's 940 MB is allocated ("would be"; the check after each
        // row, for operators whose size is not known before they run, says "are").
        Assert.Contains("its outputs for 2 images (1×600000×28×14 each) would be over the memory budget of 1024 MB", e.Message);
        Assert.Contains("settings: batch_size", e.Message);
    }
}
