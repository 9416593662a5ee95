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

    /// <summary>x (N×3×8×8) → Resize, cubic, to per-channel <paramref name="height"/>×<paramref name="width"/>.</summary>
    static string CubicResize(long height, long width)
    {
        var m = new global::Onnx.ModelProto { IrVersion = 8, Graph = new global::Onnx.GraphProto { Name = "g" } };
        m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "", Version = 18 });
        var dims = new global::Onnx.TensorShapeProto();
        dims.Dim.Add(new global::Onnx.TensorShapeProto.Types.Dimension { DimParam = "N" });
        foreach (var d in new long[] { 3, 8, 8 }) dims.Dim.Add(new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = d });
        m.Graph.Input.Add(new global::Onnx.ValueInfoProto { Name = "x", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1, Shape = dims } } });
        m.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "y", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1 } } });
        var sizes = new global::Onnx.TensorProto { Name = "sz", DataType = 7 };
        sizes.Dims.Add(2);
        sizes.Int64Data.Add([height, width]);
        m.Graph.Initializer.Add(sizes);
        var resize = new global::Onnx.NodeProto { OpType = "Resize", Name = "up", Input = { "x", "", "", "sz" }, Output = { "y" } };
        resize.Attribute.Add(new global::Onnx.AttributeProto { Name = "axes", Type = global::Onnx.AttributeProto.Types.AttributeType.Ints, Ints = { 2, 3 } });
        resize.Attribute.Add(new global::Onnx.AttributeProto { Name = "mode", Type = global::Onnx.AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("cubic") });
        m.Graph.Node.Add(resize);
        var path = Path.Combine(Env.TempDir(), $"cubic_{height}x{width}.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(m));
        return path;
    }

    [Fact]
    public void ResizesAreHeldToWhatOnnxRuntimesKernelsHoldAndCost()
    {
        // Found by tools/Loupe.Fuzz's onnx-runtime target: 3×8×8 to 3×524,293 per channel took ONNX Runtime 30 s (a
        // heap node per cached 1-D interpolation: 3 × 524,293 × (8 + 3) per image, three units of work each, beside
        // 4.7 M output values: 56.6 M units). Refused at load, by node.
        var e = Assert.Throws<Loupe.Abstractions.LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = CubicResize(3, 524_293), FlattenOutput = false }).Dispose());
        Assert.Contains("Resize node 'up'", e.Message);
        Assert.Contains("would take ~15 s for one image (4.7 M output values, each found through hash tables, and 17,301,669 cached one-dimensional interpolations", e.Message);
        Assert.Contains("uses: onnx", e.Message);
        // Found by the same target: 3×8×8 to 3×1,310,720×12 took 24.7 s with few cached interpolations (47.2 M output
        // values, each looked up through hash tables).
        var tall = Assert.Throws<Loupe.Abstractions.LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = CubicResize(1_310_720, 12), FlattenOutput = false }).Dispose());
        Assert.Contains("would take ~12 s for one image (47.2 M output values", tall.Message);
        // The onnx backend computes the same resize (libtorch's bicubic), within its byte budget.
        using (var onnx = Env.LoadOnnx(new OnnxOptions { Path = CubicResize(3, 524_293), FlattenOutput = false }))
        using (NewDisposeScope())
            Assert.Equal([1L, 3, 3, 524_293], onnx.Forward(zeros(1, 3, 8, 8)).shape);

        // An image up to the cap loads; its work counts as its share of the budget, so a batch runs in chunks that
        // keep each run within the cap: 3·3·95,000 values + 3 × (3 × 95,000 × 11) cached = 10.3 M units per image →
        // chunks of four images.
        var file = OnnxFile.Load(CubicResize(3, 95_000), 64L << 20);
        long share = OrtGuard.Peak(file, [1, 3, 8, 8]);
        Assert.Equal((3L * 3 * 95_000 + 3L * 3 * 95_000 * 11) * (OnnxNode.MaxOutputBytes / OrtGuard.MaxCubicWork), share);
        Assert.Equal(4, OnnxNode.MaxOutputBytes / share);
        // Antialiased, ONNX Runtime also holds the image resized along one axis first (here 3 × 4,194,307 × 8 floats
        // beside four copies of the 252 MB output: 1,344 MB), found by the same target (8.5 s, 1.7 GB).
        var antialiased = CubicResize(4_194_307, 5);
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(antialiased));
        m.Graph.Node[0].Attribute.Add(new global::Onnx.AttributeProto { Name = "antialias", Type = global::Onnx.AttributeProto.Types.AttributeType.Int, I = 1 });
        File.WriteAllBytes(antialiased, Google.Protobuf.MessageExtensions.ToByteArray(m));
        var a = Assert.Throws<Loupe.Abstractions.LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = antialiased, FlattenOutput = false }).Dispose());
        Assert.Contains("antialiased Resize of (1×3×8×8) to (1×3×4194307×5) would hold 1344 MB for one image", a.Message);
        // An ordinary upsampling (8×8 → 96×96) is far below it and runs on ONNX Runtime as on the onnx backend.
        using var ort = Env.LoadOrt(new OnnxOptions { Path = CubicResize(96, 96), FlattenOutput = false });
        using var reference = Env.LoadOnnx(new OnnxOptions { Path = CubicResize(96, 96), FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 8 * 8, 0.8, 0.1), [2, 3, 8, 8]);
        Assert.True(Env.RelL2(Env.Data(reference.Forward(x)), Env.Data(ort.Forward(x))) <= 1e-5, "cubic resize differs between the backends");
    }
}
