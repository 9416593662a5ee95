using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>The static pass that bounds output shapes before ONNX Runtime sees a model (issue 26 item 7; the hostile
/// files are in tests/corpus/onnx-runtime, run by CorpusTests). Here: on real exported networks the pass must infer
/// the shapes ONNX Runtime actually produces (so its bound is about the real sizes), for most values of the graph.</summary>
public class OrtGuardTests
{
    [Theory]
    [InlineData("resnet")]
    [InlineData("squeezenet1_1")]
    [InlineData("shufflenet_v2")]
    [InlineData("inception_v3")]
    [InlineData("mobilenet_v3_op13")]
    [InlineData("convnext_op13")]
    [InlineData("vit_op13")]
    [InlineData("swin_op13")]
    public void InferredShapesAreTheShapesOnnxRuntimeProduces(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        var options = new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx"), Channels = 3, Height = r.Size, Width = r.Size };
        var file = OnnxFile.Load(options.Path, 1L << 30);
        var shapes = OrtGuard.Shapes(file, [1, 3, r.Size, r.Size]);
        using var ort = Env.LoadOrt(options);
        var values = file.Model.Graph.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        var layers = ort.Layers.Select(l => l.Name).Where(values.Contains).ToList(); // float node outputs, not node-name aliases
        var inferred = layers.Where(shapes.ContainsKey).ToList();
        using var capture = ort.Capture(inferred, forGradients: false);
        using var scope = NewDisposeScope();
        ort.Forward(zeros(1, 3, r.Size, r.Size));
        foreach (var layer in inferred)
            Assert.True(shapes[layer].SequenceEqual(capture[layer].shape), $"{name}: {layer}: inferred ({string.Join("×", shapes[layer])}), ONNX Runtime gives ({string.Join("×", capture[layer].shape)})");
        double coverage = inferred.Count / (double)layers.Count;
        Assert.True(coverage >= 0.95, $"{name}: shapes inferred for {inferred.Count} of {layers.Count} float values ({string.Join(", ", layers.Except(inferred).Take(8))} ...)");
    }

    /// <summary>A Loop whose condition stays true runs forever in ONNX Runtime, which bounds nothing: the run is stopped
    /// after run_timeout_s by its terminate flag and the error says so (found by tools/Loupe.Fuzz's onnx-runtime target;
    /// the onnx backend stops a Loop after 10,000 iterations).</summary>
    [Fact]
    public void ALoopThatNeverEndsIsStopped()
    {
        var body = new global::Onnx.GraphProto { Name = "body" };
        body.Input.Add(new global::Onnx.ValueInfoProto { Name = "i", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 7, Shape = new global::Onnx.TensorShapeProto() } } });
        body.Input.Add(new global::Onnx.ValueInfoProto { Name = "c_in", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 9, Shape = new global::Onnx.TensorShapeProto() } } });
        body.Input.Add(new global::Onnx.ValueInfoProto { Name = "v_in", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1 } } });
        body.Output.Add(new global::Onnx.ValueInfoProto { Name = "c_out", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 9, Shape = new global::Onnx.TensorShapeProto() } } });
        body.Output.Add(new global::Onnx.ValueInfoProto { Name = "v_out", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1 } } });
        body.Node.Add(new global::Onnx.NodeProto { OpType = "Identity", Input = { "c_in" }, Output = { "c_out" } });
        body.Node.Add(new global::Onnx.NodeProto { OpType = "Identity", Input = { "v_in" }, Output = { "v_out" } });
        var m = new global::Onnx.ModelProto { IrVersion = 7, Graph = new global::Onnx.GraphProto { Name = "g" } };
        m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "", Version = 13 });
        var dims = new global::Onnx.TensorShapeProto();
        foreach (var d in new long[] { 1, 1, 8, 8 }) dims.Dim.Add(new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = d });
        m.Graph.Input.Add(new global::Onnx.ValueInfoProto { Name = "x", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1, Shape = dims } } });
        m.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "y", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1 } } });
        var c = new global::Onnx.TensorProto { Name = "c", DataType = 9 };
        c.Int32Data.Add(1);
        m.Graph.Initializer.Add(c);
        var loop = new global::Onnx.NodeProto { OpType = "Loop", Name = "forever", Input = { "", "c", "x" }, Output = { "y" } };
        loop.Attribute.Add(new global::Onnx.AttributeProto { Name = "body", Type = global::Onnx.AttributeProto.Types.AttributeType.Graph, G = body });
        m.Graph.Node.Add(loop);
        var path = Path.Combine(Env.TempDir(), "loop_forever.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<Loupe.Abstractions.LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = path, RunTimeoutS = 1 }).Dispose());
        Assert.Contains("took longer than 1 s and was stopped", e.Message);
        Assert.True(clock.Elapsed.TotalSeconds < 30, $"stopped after {clock.Elapsed.TotalSeconds:F0} s");
    }
}
