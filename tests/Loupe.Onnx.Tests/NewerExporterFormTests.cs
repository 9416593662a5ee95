using Google.Protobuf;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>Every torchvision family in the forms PyTorch 2's exporter writes (opset 20, IR 10): each opset-17 family
/// fixture rewritten here as torch.onnx.export(dynamo=True) writes the same operators — Reduce* axes as an input, Flatten as Reshape, global pooling as ReduceMean, the erf GELU as one Gelu node, Resize's antialias
/// attribute, the optional Indices / Mean / InvStdDev outputs named — then run on both ONNX backends against PyTorch's
/// logits and input gradients (the rewrite itself is checked: ONNX Runtime gives the same logits). No family has a Split
/// (ShuffleNet's chunks are Slices); Split's num_outputs has its own operator fixtures (ops-newer/split18_*).</summary>
public class NewerExporterFormTests
{
    public static TheoryData<string> Families()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(FamilyTests.Folder, "*.onnx").Order(StringComparer.Ordinal))
            if (!Path.GetFileNameWithoutExtension(f).EndsWith("_op13", StringComparison.Ordinal)) data.Add(Path.GetFileNameWithoutExtension(f));
        return data;
    }

    static TensorProto Longs(string name, long[] v)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.Add(v.Length);
        t.Int64Data.Add(v);
        return t;
    }

    static AttributeProto Int(string name, long v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v };


    /// <summary>The model as opset 20 with the forms listed in the class summary (what changed is counted in
    /// <paramref name="forms"/>).</summary>
    public static ModelProto Rewrite(ModelProto source, Dictionary<string, int> forms)
    {
        var m = source.Clone();
        m.IrVersion = 10;
        foreach (var o in m.OpsetImport) if (o.Domain is "" or "ai.onnx") o.Version = 20;
        var g = m.Graph;
        int k = 0;
        void Count(string form) => forms[form] = forms.GetValueOrDefault(form) + 1;
        string Const(long[] v) { var name = $"rewrite_c{k++}"; g.Initializer.Add(Longs(name, v)); return name; }
        var consumers = g.Node.SelectMany(n => n.Input).GroupBy(i => i).ToDictionary(x => x.Key, x => x.Count());
        var nodes = g.Node.ToList();
        // The erf GELU: Div(x, √2) → Erf → Add(·, 1) → Mul(x, ·) → Mul(·, 0.5) becomes Gelu(x).
        foreach (var erf in nodes.Where(n => n.OpType == "Erf").ToList())
        {
            var div = nodes.FirstOrDefault(n => n.OpType == "Div" && n.Output[0] == erf.Input[0]);
            var add = nodes.FirstOrDefault(n => n.OpType == "Add" && n.Input.Contains(erf.Output[0]));
            var mul = add is null ? null : nodes.FirstOrDefault(n => n.OpType == "Mul" && n.Input.Contains(add.Output[0]));
            var half = mul is null ? null : nodes.FirstOrDefault(n => n.OpType == "Mul" && n.Input.Contains(mul.Output[0]));
            if (div is null || add is null || mul is null || half is null || !mul.Input.Contains(div.Input[0])) continue;
            if (new[] { div, erf, add, mul }.Any(n => consumers.GetValueOrDefault(n.Output[0]) != 1)) continue;
            var gelu = new NodeProto { OpType = "Gelu", Name = half.Name };
            gelu.Input.Add(div.Input[0]);
            gelu.Output.Add(half.Output[0]);
            int at = nodes.IndexOf(half);
            nodes[at] = gelu;
            foreach (var gone in new[] { div, erf, add, mul }) nodes.Remove(gone);
            Count("Gelu");
        }
        for (int i = 0; i < nodes.Count; i++)
        {
            var n = nodes[i];
            switch (n.OpType)
            {
                case "ReduceMean" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL2" when n.Attribute.FirstOrDefault(a => a.Name == "axes") is { } axes:
                    n.Attribute.Remove(axes);
                    n.Input.Add(Const(axes.Ints.ToArray()));
                    Count("Reduce axes input");
                    break;
                case "GlobalAveragePool":
                {
                    var r = new NodeProto { OpType = "ReduceMean", Name = n.Name };
                    r.Input.Add([n.Input[0], Const([-1, -2])]);
                    r.Output.Add(n.Output[0]);
                    r.Attribute.Add(Int("keepdims", 1));
                    nodes[i] = r;
                    Count("ReduceMean pooling");
                    break;
                }
                case "Flatten" when n.Attribute.FirstOrDefault(a => a.Name == "axis") is null or { I: 1 }:
                {
                    var r = new NodeProto { OpType = "Reshape", Name = n.Name };
                    r.Input.Add([n.Input[0], Const([0, -1])]);
                    r.Output.Add(n.Output[0]);
                    nodes[i] = r;
                    Count("Flatten as Reshape");
                    break;
                }
                case "MaxPool" when n.Output.Count == 1:
                    n.Output.Add(n.Output[0] + "_indices");
                    Count("MaxPool Indices");
                    break;
                case "LayerNormalization" when n.Output.Count == 1:
                    n.Output.Add([n.Output[0] + "_mean", n.Output[0] + "_invstd"]);
                    Count("LayerNormalization statistics");
                    break;
                case "Resize":
                    n.Attribute.Add(Int("antialias", 0));
                    Count("Resize antialias");
                    break;
            }
        }
        // Module scopes as PyTorch 2 records them: node names node_<Op>_<i>, and the scopes in the node's metadata as the
        // Python repr of the cumulative paths between the root ('') and the FX node's name.
        for (int i = 0; i < nodes.Count; i++)
        {
            var n = nodes[i];
            var scopes = ModuleScopes.Of(n.Name).ToList();
            var fx = n.OpType.ToLowerInvariant() + "_" + i;
            n.Name = $"node_{n.OpType}_{i}";
            if (scopes.Count == 0) continue;
            n.MetadataProps.Add(new StringStringEntryProto { Key = "namespace", Value = ": torchvision.models.Model/" + string.Join("/", scopes.Select(p => p + ": torch.nn.Module")) });
            n.MetadataProps.Add(new StringStringEntryProto { Key = "pkg.torch.onnx.name_scopes", Value = "[" + string.Join(", ", new[] { "" }.Concat(scopes).Append(fx).Select(p => $"'{p}'")) + "]" });
            Count("name_scopes metadata");
        }
        g.Node.Clear();
        g.Node.Add(nodes);
        return m;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void BothBackendsRunTheNewerFormsAsPyTorch(string name)
    {
        var source = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(FamilyTests.Folder, name + ".onnx")));
        var forms = new Dictionary<string, int>();
        var rewritten = Rewrite(source, forms);
        Assert.True(forms.Count > 0, $"{name}: no operator was rewritten");
        var path = Path.Combine(Env.TempDir(), name + "_opset20.onnx");
        File.WriteAllBytes(path, rewritten.ToByteArray());
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        // The rewrite is the same function: ONNX Runtime's logits on it equal PyTorch's.
        var x = Env.SinInput(2L * 3 * r.Size * r.Size);
        var (ort, _) = Env.OrtRun(path, x, [2, 3, r.Size, r.Size]);
        double scale = r.Logits.Data.Max(v => Math.Abs(v));
        Assert.True(ort.Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / scale <= 1e-4, $"{name}: the rewritten graph is not the same function");
        // The differentiable backend: logits and input gradient as PyTorch's.
        FamilyTests.Compare(path, r, name + " (opset 20 forms: " + string.Join(", ", forms.Select(f => $"{f.Key} ×{f.Value}")) + ")");
        // The onnx-runtime backend: logits as PyTorch's.
        using var model = Env.LoadOrt(new OnnxOptions { Path = path });
        using var scope = NewDisposeScope();
        var y = Env.Data(model.Forward(tensor(x, [2, 3, r.Size, r.Size])));
        Assert.True(y.Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / scale <= 1e-4, $"{name}: onnx-runtime logits differ");
    }

    [Theory]
    [InlineData("resnet")]
    [InlineData("swin")]
    [InlineData("convnext")]
    [InlineData("vit")]
    public void ModulePathsComeFromTheNodesNameScopes(string name)
    {
        var path = Path.Combine(FamilyTests.Folder, name + ".onnx");
        var rewritten = Path.Combine(Env.TempDir(), name + "_scopes.onnx");
        File.WriteAllBytes(rewritten, Rewrite(ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)), []).ToByteArray());
        foreach (var load in new Func<OnnxOptions, IModel>[] { Env.LoadOnnx, Env.LoadOrt })
        {
            using var before = load(new OnnxOptions { Path = path });
            using var after = load(new OnnxOptions { Path = rewritten });
            var expected = before.Layers.Where(l => l.IsModule).ToDictionary(l => l.Name, l => l.AliasOf);
            var got = after.Layers.Where(l => l.IsModule).ToDictionary(l => l.Name, l => l.AliasOf);
            Assert.True(expected.Count > 5, $"{name}: {expected.Count} module paths");
            Assert.Equal(expected.OrderBy(kv => kv.Key, StringComparer.Ordinal), got.OrderBy(kv => kv.Key, StringComparer.Ordinal));
        }
    }

    /// <summary>LRP on the graph form of resnet18 as PyTorch 2 exports it (global pooling a ReduceMean, the flatten a
    /// Reshape, MaxPool's Indices named, module scopes in metadata): the same map as on the TorchScript export, with
    /// per-layer rules named by module path.</summary>
    [Fact]
    public void LrpRunsOnTheNewerFormsWithPerLayerRules()
    {
        var path = ModelTests.ResNetWithHashWeights();
        var rewritten = Path.Combine(Path.GetDirectoryName(path)!, "resnet18_opset20.onnx");   // beside its external data
        var forms = new Dictionary<string, int>();
        File.WriteAllBytes(rewritten, Rewrite(ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)), forms).ToByteArray());
        Assert.True(forms.ContainsKey("ReduceMean pooling") && forms.ContainsKey("MaxPool Indices") && forms.ContainsKey("name_scopes metadata"), string.Join(", ", forms.Keys));
        var options = new Loupe.Analysis.Decisions.LrpOptions
        {
            Composite = Loupe.Analysis.Decisions.LrpComposite.EpsilonGammaBox,
            Rules = [new() { Layer = "layer2.0.downsample.0", Rule = Loupe.Analysis.Decisions.LrpRuleKind.Gamma, Gamma = 1 }, new() { Layer = "fc", Rule = Loupe.Analysis.Decisions.LrpRuleKind.Epsilon, Epsilon = 0.5 }],
        };
        float[] Map(string file)
        {
            using var model = Env.LoadOnnx(new OnnxOptions { Path = file, Mean = [0.485f, 0.456f, 0.406f], Std = [0.229f, 0.224f, 0.225f] });
            using var scope = NewDisposeScope();
            var x = Npy.Read(Env.LoupeFixture("arch_input_64.npy")).ToTensor();
            Tensor y;
            using (no_grad()) y = model.Forward(x);
            var relevance = nn.functional.one_hot(y.argmax(1), y.shape[1]).to(ScalarType.Float32);
            return Env.Data(Loupe.Analysis.Decisions.Lrp.Relevance(model, model.DefaultInput, options, x, relevance, y));
        }
        var before = Map(path);
        var after = Map(rewritten);
        Assert.True(Env.RelL2(after, before) <= 1e-5, $"rel-L2 {Env.RelL2(after, before):E2}");
    }

    [Fact]
    public void TheRewriteReachesEveryForm()
    {
        var forms = new Dictionary<string, int>();
        foreach (string name in Families())
            Rewrite(ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(FamilyTests.Folder, name + ".onnx"))), forms);
        foreach (var form in new[] { "Gelu", "Reduce axes input", "ReduceMean pooling", "Flatten as Reshape", "MaxPool Indices", "LayerNormalization statistics", "name_scopes metadata" })
            Assert.True(forms.ContainsKey(form), $"no family has the form '{form}' ({string.Join(", ", forms.Keys)})");
    }
}
