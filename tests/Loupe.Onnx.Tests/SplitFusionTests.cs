using Google.Protobuf;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>Slices of one value fused into one split (OnnxModel.Fusion): on a graph built here, where no other fusion
/// applies, the outputs equal the closed form bit for bit and the input gradient to rounding, both when the slices
/// tile the axis (split) and when they overlap (each Slice runs as it is).</summary>
public class SplitFusionTests
{
    static TensorProto Longs(string name, params long[] v)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.Add(v.Length);
        t.Int64Data.Add(v);
        return t;
    }

    static ValueInfoProto Image(string name, long channels)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        foreach (var d in new[] { channels, 4, 4 }) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
    }

    static NodeProto Node(string op, string[] inputs, string output, int axis = int.MinValue)
    {
        var n = new NodeProto { OpType = op, Name = output };
        n.Input.Add(inputs);
        n.Output.Add(output);
        if (axis != int.MinValue) n.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = axis });
        return n;
    }

    /// <summary>y = concat(x[:,0:2] + x[:,1:3] (overlapping: not fused into a split), t[:,2:3], t[:,0:2]) with t = 2x
    /// (tiling channels 0..3 in another order: one split).</summary>
    static string Graph()
    {
        var g = new GraphProto { Name = "slices" };
        g.Input.Add(Image("x", 3));
        g.Output.Add(Image("y", 5));
        g.Initializer.Add([Longs("s0", 0), Longs("e2", 2), Longs("s1", 1), Longs("e3", 3), Longs("ax", 1), Longs("s2", 2)]);
        var two = new TensorProto { Name = "two", DataType = (int)TensorProto.Types.DataType.Float };
        two.FloatData.Add(2f);
        g.Initializer.Add(two);
        g.Node.Add([
            Node("Slice", ["x", "s0", "e2", "ax"], "a"),
            Node("Mul", ["x", "two"], "t"),
            Node("Slice", ["x", "s1", "e3", "ax"], "b"),
            Node("Slice", ["t", "s2", "e3", "ax"], "c"),
            Node("Add", ["a", "b"], "ab"),
            Node("Slice", ["t", "s0", "e2", "ax"], "d"),
            Node("Concat", ["ab", "c", "d"], "y", axis: 1),
        ]);
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        var path = Path.Combine(Env.TempDir(), "slices.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    [Fact]
    public void TilingSlicesSplitAndOverlappingOnesRunAsSlicesBothExact()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Graph(), FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 4 * 4, 0.7, 0.3), [2, 3, 4, 4]);
        var ops = model.ProfileByOperator(x, 1).ToDictionary(t => t.Op, t => t.Nodes);
        Assert.Equal(2, ops["Slice (split)"]);          // {a, b} on x and {c, d} on t
        Assert.False(ops.ContainsKey("Slice"));
        Assert.Equal(model.RuntimeNodeCount - 2, model.FusedNodeCount);

        var xi = x.detach().requires_grad_(true);
        var y = model.Forward(xi);
        var w = tensor(Env.SinInput(2L * 5 * 4 * 4, 1.3), [2, 5, 4, 4]);
        var g = CheckedOps.Grad([(y * w).sum()], [xi])[0];

        var xr = x.detach().requires_grad_(true);
        var t = xr * 2f;
        var expected = cat([xr[.., 0..2] + xr[.., 1..3], t[.., 2..3], t[.., 0..2]], 1);
        var gExpected = CheckedOps.Grad([(expected * w).sum()], [xr])[0];
        Assert.Equal([2L, 5, 4, 4], y.shape);
        Assert.Equal(Env.Data(expected), Env.Data(y));
        // x's gradient sums three paths (two slices, the Mul) in autograd's order, which may differ by rounding.
        Assert.True(Env.RelL2(Env.Data(g), Env.Data(gExpected)) <= 1e-6, $"input gradient: rel-L2 {Env.RelL2(Env.Data(g), Env.Data(gExpected))}");
    }
}
