using Google.Protobuf;
using Loupe.Abstractions.Toolkit;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>A forward without gradients frees each value after its last reader (OnnxModel.Release.cs): on a chain of
/// 31 nodes built here (Relu, then Add of the two previous values, Identity and Dropout with its unread mask, in turn),
/// plus an If whose branch hands back its own initializer, the outputs equal the closed form, no more than a few
/// computed values are held at once, and nothing the model owns or a capture keeps is freed: a second forward, a forward
/// with gradients, a capture and an intervention on a value that is otherwise freed all give the closed form's
/// numbers.</summary>
public class ValueReleaseTests
{
    const int Chain = 30;

    static ValueInfoProto Image(string name, long channels)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "N" });
        foreach (var d in new[] { channels, 4, 4 }) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
    }

    static NodeProto Node(string op, string[] inputs, params string[] outputs)
    {
        var n = new NodeProto { OpType = op, Name = outputs[0] };
        n.Input.Add(inputs);
        n.Output.Add(outputs);
        return n;
    }

    static TensorProto Floats(string name, long[] dims, params float[] v)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        t.Dims.Add(dims);
        t.FloatData.Add(v);
        return t;
    }

    static readonly float[] Bias = [0.5f, -1f, 2f];

    /// <summary>v0 = relu(x); v_k = v_{k−1} + v_{k−2} (k ≡ 1 mod 3, v_{−1} = x), Identity(v_{k−1}) (k ≡ 0), Dropout(v_{k−1})
    /// (k ≡ 2, its mask unread); bias = If(max(x) > −10⁹) → the then-branch's initializer; y = v_30 + bias.</summary>
    static string Graph()
    {
        var g = new GraphProto { Name = "chain" };
        g.Input.Add(Image("x", 3));
        g.Output.Add(Image("y", 3));
        g.Initializer.Add(Floats("low", [], -1e9f));
        string V(int k) => k < 0 ? "x" : $"v{k}";
        g.Node.Add(Node("Relu", ["x"], "v0"));
        for (int k = 1; k <= Chain; k++)
            g.Node.Add((k % 3) switch
            {
                1 => Node("Add", [V(k - 1), V(k - 2)], V(k)),
                0 => Node("Identity", [V(k - 1)], V(k)),
                _ => Node("Dropout", [V(k - 1)], V(k), $"mask{k}"),
            });
        var reduce = Node("ReduceMax", ["x"], "m");
        reduce.Attribute.Add(new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
        g.Node.Add([reduce, Node("Greater", ["m", "low"], "cond")]);
        GraphProto Branch(string name, float scale)
        {
            var b = new GraphProto { Name = name };
            b.Initializer.Add(Floats("k", [1, 3, 1, 1], [.. Bias.Select(v => v * scale)]));
            b.Output.Add(new ValueInfoProto { Name = "k", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
            return b;
        }
        var branch = Node("If", ["cond"], "bias");
        branch.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then", 1) });
        branch.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else", 0) });
        g.Node.Add([branch, Node("Add", [V(Chain), "bias"], "y")]);
        var m = new ModelProto { IrVersion = 8, Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
        var path = Path.Combine(Env.TempDir(), "chain.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    /// <summary>The closed form: every v_k, and y; <paramref name="doubled"/> replaces v_k by 2·v_k (an intervention).</summary>
    static (Tensor[] V, Tensor Y) Expected(Tensor x, int doubled = -1)
    {
        var v = new Tensor[Chain + 1];
        Tensor At(int k) => k < 0 ? x : v[k];
        for (int k = 0; k <= Chain; k++)
        {
            v[k] = k == 0 ? x.relu() : k % 3 == 1 ? At(k - 1) + At(k - 2) : At(k - 1);
            if (k == doubled) v[k] = v[k] * 2f;
        }
        return (v, v[Chain] + tensor(Bias).view(1, 3, 1, 1));
    }

    static void Same(Tensor expected, Tensor actual, string what) =>
        Assert.True(Env.RelL2(Env.Data(expected), Env.Data(actual.reshape(expected.shape))) <= 1e-6, $"{what} differs from the closed form");

    [Fact]
    public void AChainHoldsAFewValuesAndGivesTheClosedForm()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Graph(), FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 4 * 4, 0.7, 0.3), [2, 3, 4, 4]);
        var (_, y) = Expected(x);
        for (int round = 0; round < 2; round++)   // the If branch's initializer is the model's: the second forward reads it
        {
            using (no_grad()) Same(y, model.Forward(x), $"forward {round + 1}");
            // Held at once: the two values an Add reads and its output (a Dropout: its input, output and mask); every
            // node's output held to the end would be 2·31 + 3.
            Assert.InRange(OnnxModel.HeldPeak, 2, 4);
        }
        var xi = x.detach().requires_grad_(true);
        var w = tensor(Env.SinInput(2L * 3 * 4 * 4, 1.3), [2, 3, 4, 4]);
        var g = CheckedOps.Grad([(model.Forward(xi) * w).sum()], [xi])[0];
        Assert.Equal(0, OnnxModel.HeldPeak);   // with gradients nothing is freed
        var xr = x.detach().requires_grad_(true);
        var gr = CheckedOps.Grad([(Expected(xr).Y * w).sum()], [xr])[0];
        Same(gr, g, "input gradient");
    }

    [Fact]
    public void CapturedAndReplacedValuesAreKept()
    {
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Graph(), FlattenOutput = false });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * 4 * 4, 0.9, -0.2), [2, 3, 4, 4]);
        var (v, y) = Expected(x, doubled: 5);
        using var capture = model.Capture(["v4", "v10"], forGradients: false);
        using var doubled = model.Intervene("v5", t => t * 2f);
        using (no_grad()) Same(y, model.Forward(x), "output with v5 doubled");
        Same(v[4], capture["v4"], "captured v4");
        Same(v[10], capture["v10"], "captured v10");
        Assert.InRange(OnnxModel.HeldPeak, 2, 6);   // v5 (replaced) is held to the end beside the chain's few
    }

    [Fact]
    public void AGraphRunRowByRowFreesEachRowsValues()
    {
        // The ViT exported for a batch of one (BatchOfOneTests' fixture) on three images runs as rows of one.
        var folder = Env.Fixture("batch-one");
        var kv = File.ReadAllLines(Path.Combine(folder, "vit.txt")).Select(l => l.Split(' ', 2)).ToDictionary(p => p[0], p => p[1]);
        int size = int.Parse(kv["size"], System.Globalization.CultureInfo.InvariantCulture);
        var logits = Npy.Read(Path.Combine(folder, "vit.logits.npy"));
        using var model = (OnnxModel)Env.LoadOnnx(new OnnxOptions { Path = Path.Combine(folder, "vit.onnx") });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(3L * 3 * size * size), [3, 3, size, size]);
        for (int round = 0; round < 2; round++)
        {
            using (no_grad())
            {
                var y = model.Forward(x);
                double err = Env.Data(y).Zip(logits.Data).Max(p => Math.Abs(p.First - p.Second)) / logits.Data.Max(v => Math.Abs(v));
                Assert.True(err <= 1e-4, $"forward {round + 1}: logits differ from PyTorch's by {err:E2}");
            }
            // Each row holds a few values at a time (the residual stream beside a block's branch), not its hundreds.
            // (8 per row here; 72 nodes run per row.)
            Assert.InRange(OnnxModel.HeldPeak, 3, 3 * 10);
        }
    }
}
