using Google.Protobuf;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>The opset 18–23 forms: what the onnx backend refuses (each with its node and reason), the opsets it accepts,
/// the static shape pass of the onnx-runtime backend on the new forms, and the reading of PyTorch 2's name-scope
/// metadata (which comes from the file, so it is read defensively).</summary>
public class NewerOpsetChecksTests
{
    static string Fixture(string name) => Env.Fixture($"ops-newer/{name}.onnx");

    /// <summary>A copy of fixture <paramref name="name"/> changed by <paramref name="edit"/>, written to a temporary file.</summary>
    static string Edited(string name, Action<ModelProto> edit)
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(name.Contains('/') ? Env.Fixture(name + ".onnx") : Fixture(name)));
        edit(m);
        var path = Path.Combine(Env.TempDir(), name.Replace('/', '_') + "_edited.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    static void SetInt(NodeProto n, string attribute, long value)
    {
        n.Attribute.Remove(n.Attribute.FirstOrDefault(a => a.Name == attribute));
        n.Attribute.Add(new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Int, I = value });
    }

    static string Refusal(string path) => Env.Refusal(path);

    [Fact]
    public void KeepAspectRatioPolicyOtherThanStretchIsRefused()
    {
        var path = Edited("resize18_axes_sizes_nearest", m => m.Graph.Node.Single(n => n.OpType == "Resize").Attribute.Add(
            new AttributeProto { Name = "keep_aspect_ratio_policy", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("not_larger") }));
        Assert.Contains("keep_aspect_ratio_policy 'not_larger'", Refusal(path));
    }

    [Fact]
    public void AveragePoolDilationsAreRefused()
    {
        var path = Edited("ops/avgpool_ceil", m =>
        {
            foreach (var o in m.OpsetImport) o.Version = 19;
            m.Graph.Node.Single(n => n.OpType == "AveragePool").Attribute.Add(new AttributeProto { Name = "dilations", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 2, 2 } });
        });
        Assert.Contains("dilations (2, 2) are not supported", Refusal(path));
    }

    [Fact]
    public void SplitNumOutputsMustMatchTheOutputs()
    {
        var path = Edited("split18_num_outputs_uneven", m => SetInt(m.Graph.Node.Single(n => n.OpType == "Split"), "num_outputs", 4));
        Assert.Contains("num_outputs 4 does not match the node's 3 outputs", Refusal(path));
    }

    [Fact]
    public void ScatterReductionsBoundTheUpdatesOfOnePlace()
    {
        // 1,025 updates of one place: refused by name rather than 1,025 rounds. y = ScatterND(x, [[0, 1]] × 1025, u),
        // u = x[:1, :1] broadcast to 1025 rows of 8×8.
        static TensorProto Longs(string name, long[] dims, long[] v)
        {
            var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            t.Dims.Add(dims);
            t.Int64Data.Add(v);
            return t;
        }
        var path = Edited("scatternd18_max", m =>
        {
            var g = m.Graph;
            g.Initializer.Clear();
            g.Initializer.Add([Longs("s0", [2], [0, 0]), Longs("e0", [2], [1, 1]), Longs("ax", [2], [0, 1]), Longs("to", [3], [1025, 8, 8]),
                Longs("i", [1025, 2], Enumerable.Repeat(new long[] { 0, 1 }, 1025).SelectMany(p => p).ToArray())]);
            g.Node.Clear();
            g.Node.Add([
                new NodeProto { OpType = "Slice", Input = { "x", "s0", "e0", "ax" }, Output = { "x0" } },
                new NodeProto { OpType = "Reshape", Input = { "x0", "to0" }, Output = { "x2" } },
                new NodeProto { OpType = "Expand", Input = { "x2", "to" }, Output = { "u" } },
                new NodeProto { OpType = "ScatterND", Input = { "x", "i", "u" }, Output = { "y" }, Attribute = { new AttributeProto { Name = "reduction", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("max") } } },
            ]);
            g.Initializer.Add(Longs("to0", [3], [1, 8, 8]));
        });
        var e = Assert.Throws<LoupeException>(() =>
        {
            using var model = Env.LoadOnnx(new OnnxOptions { Path = path });
            using var scope = NewDisposeScope();
            model.Forward(zeros(1, 3, 8, 8));
        });
        Assert.Contains("receives more than 1024 updates", e.Message);
    }

    [Theory]
    [InlineData("logsoftmax11_flattened", 6, false)]
    [InlineData("logsoftmax11_flattened", 7, true)]
    [InlineData("shape_chain_opset22", 18, true)]
    [InlineData("shape_chain_opset22", 23, true)]
    [InlineData("shape_chain_opset22", 24, false)]
    public void OpsetsSevenToTwentyThreeAreAccepted(string fixture, long opset, bool accepted)
    {
        var path = Edited(fixture, m => { foreach (var o in m.OpsetImport) o.Version = opset; });
        if (accepted) { using var _ = Env.LoadOnnx(new OnnxOptions { Path = path }); }
        else Assert.Contains($"uses ONNX opset {opset}; the onnx backends support opsets 7–23", Refusal(path));
    }

    [Fact]
    public void ARecursiveFunctionIsRefusedByItsDepth()
    {
        var path = Edited("functions_nested_with_attribute_refs", m =>
        {
            var f = m.Functions.Single(f => f.Name == "ScaledAct");
            f.Node.Add(new NodeProto { OpType = "ScaledAct", Domain = "local", Input = { "Y", "S" }, Output = { "again", "again2" } });
        });
        Assert.Contains("function calls nest deeper than 32 ('local.ScaledAct' calls itself?)", Refusal(path));
    }

    [Fact]
    public void FunctionsThatDoubleAtEachLevelAreRefusedByTheirSize()
    {
        // f0 = Relu; f_k(X) = f_{k-1}(f_{k-1}(X)): f_21 alone would be 2,097,152 nodes.
        var path = Edited("functions_nested_with_attribute_refs", m =>
        {
            m.Functions.Clear();
            var f0 = new FunctionProto { Name = "f0", Domain = "local", Input = { "X" }, Output = { "Y" }, Node = { new NodeProto { OpType = "Relu", Input = { "X" }, Output = { "Y" } } } };
            f0.OpsetImport.Add(m.OpsetImport.First(o => o.Domain == ""));
            m.Functions.Add(f0);
            for (int k = 1; k <= 21; k++)
            {
                var f = new FunctionProto { Name = $"f{k}", Domain = "local", Input = { "X" }, Output = { "Y" } };
                f.Node.Add(new NodeProto { OpType = $"f{k - 1}", Domain = "local", Input = { "X" }, Output = { "h" } });
                f.Node.Add(new NodeProto { OpType = $"f{k - 1}", Domain = "local", Input = { "h" }, Output = { "Y" } });
                f.OpsetImport.Add(m.OpsetImport);
                m.Functions.Add(f);
            }
            m.Graph.Node.Clear();
            m.Graph.Node.Add(new NodeProto { OpType = "f21", Domain = "local", Input = { "x" }, Output = { "y" } });
        });
        Assert.Contains("its functions expand to more than 1,000,000 nodes", Refusal(path));
    }

    [Fact]
    public void AFunctionOfAnotherOpsetIsRefused()
    {
        var path = Edited("functions_nested_with_attribute_refs", m => m.Functions.Single(f => f.Name == "Block").OpsetImport.First(o => o.Domain == "").Version = 13);
        Assert.Contains("function 'local.Block' imports ONNX opset 13, the model 18", Refusal(path));
    }

    public static TheoryData<string> NewerForms()
    {
        var data = new TheoryData<string>();
        foreach (var f in new[] { "pad18_axes_constant", "pad18_axes_negative_edge", "pad19_wrap_axes_crop", "resize18_axes_scales_linear",
                     "resize18_axes_sizes_nearest", "resize18_cubic_axes_sizes_down", "split18_num_outputs_uneven", "reduce18_max_min_nokeep",
                     "reduce18_prod_l1_l2", "reduce18_noop_empty_axes", "groupnorm18_per_group" })
            data.Add(f);
        return data;
    }

    /// <summary>The onnx-runtime backend's static shape pass (its bound on hostile sizes) knows the opset-18 forms: the
    /// shapes it infers are ONNX Runtime's, and it infers the graph's output.</summary>
    [Theory]
    [MemberData(nameof(NewerForms))]
    public void TheShapePassInfersTheNewerFormsAsOnnxRuntime(string name)
    {
        var file = OnnxFile.Load(Fixture(name), 1L << 30);
        var shapes = OrtGuard.Shapes(file, [1, 3, 8, 8]);
        var x = Env.SinInput(3 * 8 * 8);
        var (_, shape) = Env.OrtRun(Fixture(name), x, [1, 3, 8, 8]);
        Assert.True(shapes.TryGetValue("y", out var inferred), $"{name}: the output's shape is not inferred");
        Assert.Equal(shape, inferred);
    }

    [Fact]
    public void APadWithAxesOverTheBudgetIsRefusedBeforeOnnxRuntimeAllocates()
    {
        var path = Edited("pad18_axes_constant", m =>
        {
            var p = m.Graph.Initializer.Single(t => t.Name == "p");
            p.Int64Data.Clear();
            p.RawData = ByteString.Empty;
            p.Int64Data.Add([1, 100_000_000, 0, 100_000_000]);
        });
        var e = Assert.Throws<LoupeException>(() => OrtGuard.Check(OnnxFile.Load(path, 1L << 30), [1, 3, 8, 8]));
        Assert.Contains("over the memory budget", e.Message);
    }

    [Theory]
    [InlineData("['', 'layer4', 'layer4.1', 'conv2d_3']", new[] { "", "layer4", "layer4.1", "conv2d_3" })]
    [InlineData("[\"it's\", 'a\\\\b', 'c\\'d']", new[] { "it's", "a\\b", "c'd" })]
    [InlineData("[]", new string[0])]
    public void NameScopesAreReadFromPythonListReprs(string text, string[] expected) =>
        Assert.Equal(expected, OnnxFile.ParsePythonStrings(text));

    [Theory]
    [InlineData("layer4")]
    [InlineData("['unterminated]")]
    [InlineData("['a' 'b'")]
    [InlineData("[1, 2]")]
    public void TextThatIsNotAListOfStringsIsIgnored(string text) => Assert.Null(OnnxFile.ParsePythonStrings(text));

    [Fact]
    public void OverlongOrOverfullScopeListsAreIgnored()
    {
        Assert.Null(OnnxFile.ParsePythonStrings("['" + new string('a', 5000) + "']"));
        Assert.Null(OnnxFile.ParsePythonStrings("[" + string.Join(", ", Enumerable.Repeat("'a'", 65)) + "]"));
    }
}
