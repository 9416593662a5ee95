using System.Diagnostics;
using Google.Protobuf;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>ONNX Runtime's fused operators where ONNX Runtime itself gives no reference (BiasAdd has no CPU kernel:
/// its formula), what is refused and how (the file is untrusted: a fused node that ONNX Runtime would reject is named
/// with its reason), and the names the expansion gives.</summary>
public class OnnxContribTests
{
    /// <summary>A copy of ops-contrib fixture <paramref name="name"/> changed by <paramref name="edit"/>.</summary>
    static string Edited(string name, Action<ModelProto> edit)
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Env.Fixture($"ops-contrib/{name}.onnx")));
        edit(m);
        var path = Path.Combine(Env.TempDir(), name + "_edited.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    static NodeProto Fused(ModelProto m) => m.Graph.Node.Single(n => n.Domain == OnnxContrib.Domain);

    static string Refusal(string path) => Env.Refusal(path);

    [Fact]
    public void BiasAddIsXPlusBiasPlusSkip()
    {
        // skiplayernorm: t (N×24×8), skip (24×8), bias8 (8) — the same inputs, as a BiasAdd.
        var path = Edited("skiplayernorm", m =>
        {
            var n = Fused(m);
            n.OpType = "BiasAdd";
            n.Input.Clear();
            n.Input.Add(["t", "bias8", "skip"]);
            n.Attribute.Clear();
        });
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path, FlattenOutput = false });
        using var scope = NewDisposeScope();
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Tensor Init(string name)
        {
            var t = m.Graph.Initializer.Single(i => i.Name == name);
            var values = t.FloatData.Count > 0 ? t.FloatData.ToArray() : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
            return tensor(values).view(t.Dims.ToArray());
        }
        var x = tensor(Env.SinInput(2 * 3 * 8 * 8, 1.5, 0.1), [2, 3, 8, 8]);
        var expected = x.view(2, 24, 8) + Init("bias8") + Init("skip");
        Assert.Equal(Env.Data(expected), Env.Data(model.Forward(x)));
    }

    [Fact]
    public void AFusedActivationOnnxRuntimeDoesNotKnowIsRefusedByName()
    {
        var path = Edited("fusedconv_relu", m => Fused(m).Attribute.Single(a => a.Name == "activation").S = ByteString.CopyFromUtf8("Swish"));
        var message = Refusal(path);
        Assert.Contains("com.microsoft.FusedConv", message);
        Assert.Contains("activation 'Swish'", message);
    }

    [Fact]
    public void AFusedGemmActivationWithoutItsParameterIsRefused()
    {
        var path = Edited("fusedgemm_elu", m => Fused(m).Attribute.Remove(Fused(m).Attribute.Single(a => a.Name == "activation_alpha")));
        Assert.Contains("activation Elu needs the attribute activation_alpha", Refusal(path));
    }

    [Fact]
    public void WrongActivationParametersAreRefused()
    {
        var path = Edited("fusedconv_leakyrelu", m => Fused(m).Attribute.Single(a => a.Name == "activation_params").Floats.Add(0.5f));
        Assert.Contains("activation LeakyRelu takes 1 parameter(s), not 2", Refusal(path));
    }

    [Fact]
    public void AMissingInputIsRefused()
    {
        var path = Edited("biasgelu", m => Fused(m).Input.RemoveAt(1));
        Assert.Contains("input 1 is missing", Refusal(path));
    }

    [Fact]
    public void TheExpandedNodesTakeTheExportersNames()
    {
        // A FusedConv named as ONNX Runtime names it (the Conv's name), writing the value the exporter's ReLU wrote.
        var path = Edited("fusedconv_relu", m =>
        {
            var n = Fused(m);
            n.Name = "/block/conv/Conv";
            m.Graph.Node.Add(new NodeProto { OpType = "Identity", Input = { "/block/act/Relu_output_0" }, Output = { "y" }, Name = "/Identity" });
            n.Output[0] = "/block/act/Relu_output_0";
        });
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path });
        var layers = model.Layers.ToDictionary(l => l.Name, l => l.Kind);
        Assert.Equal("module (Conv) = /block/conv/Conv_output_0", layers["block.conv"]);
        Assert.Equal("module (Relu) = /block/act/Relu_output_0", layers["block.act"]);
    }

    [Fact]
    public void NamesTakenAlreadyCostOncePerName()
    {
        // 20,000 FusedConvs whose expansion wants names a hostile file has taken: v_output_0, v_output_0_1 … _20000.
        var path = Edited("fusedconv_relu", m =>
        {
            var n = Fused(m);
            n.Name = "v";
            var nodes = m.Graph.Node;
            for (int k = 0; k <= 20_000; k++)
                m.Graph.Initializer.Add(new TensorProto { Name = k == 0 ? "v_output_0" : $"v_output_0_{k}", DataType = 1, Dims = { 1 }, FloatData = { 0f } });
            string last = "x";
            for (int k = 0; k < 2_000; k++)
            {
                var copy = n.Clone();
                copy.Input[0] = last;
                copy.Output[0] = last = k == 1_999 ? "y" : $"c{k}";
                if (k < 1_999) copy.Input[0] = k == 0 ? "x" : $"c{k - 1}";
                nodes.Add(copy);
            }
            nodes.Remove(n);
        });
        var clock = Stopwatch.StartNew();
        var file = OnnxFile.Load(path, 256L << 20);
        Assert.True(clock.Elapsed.TotalSeconds < 5, $"expansion took {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(4_000, file.Model.Graph.Node.Count);
    }

    /// <summary>Attention without its bias is attention with a zero bias (ONNX Runtime's CPU kernel crashes on it, so no
    /// fixture compares the two there).</summary>
    [Fact]
    public void AttentionWithoutBiasIsAZeroBias()
    {
        var zero = Edited("attention", m =>
        {
            var b = m.Graph.Initializer.Single(t => t.Name == "bqkv");
            b.RawData = ByteString.Empty;
            b.FloatData.Clear();
            b.FloatData.Add(new float[24]);
        });
        var none = Edited("attention_heads4_scale", m => { Fused(m).Input.RemoveAt(2); Fused(m).Attribute.Single(a => a.Name == "num_heads").I = 2; Fused(m).Attribute.Remove(Fused(m).Attribute.Single(a => a.Name == "scale")); });
        using var a = Env.LoadOnnx(new OnnxOptions { Path = zero });
        using var b = Env.LoadOnnx(new OnnxOptions { Path = none });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2 * 3 * 8 * 8, 1.5, 0.1), [2, 3, 8, 8]);
        Assert.Equal(Env.Data(a.Forward(x)), Env.Data(b.Forward(x)));
    }

    [Theory]
    [InlineData("attention", 3, "mask_index (a text model's token mask) is not supported")]
    [InlineData("attention", 4, "a key-value cache")]
    [InlineData("multiheadattention", 4, "key_padding_mask (a text model's token mask) is not supported")]
    [InlineData("multiheadattention", 6, "a key-value cache")]
    public void TextModelInputsOfAttentionAreRefusedByName(string fixture, int slot, string expected)
    {
        var path = Edited(fixture, m =>
        {
            var n = Fused(m);
            while (n.Input.Count <= slot) n.Input.Add("");
            n.Input[slot] = "x";
        });
        Assert.Contains(expected, Refusal(path));
    }

    [Fact]
    public void CausalAttentionIsRefused()
    {
        var path = Edited("attention", m => Fused(m).Attribute.Add(new AttributeProto { Name = "unidirectional", Type = AttributeProto.Types.AttributeType.Int, I = 1 }));
        Assert.Contains("unidirectional (causal) attention is not supported", Refusal(path));
    }

    /// <summary>The attention probabilities are a Softmax node's output again, in the fused node's scope: what attention
    /// rollout reads.</summary>
    [Fact]
    public void AttentionProbabilitiesAreALayer()
    {
        var path = Edited("attention", m => Fused(m).Output[0] = "/encoder/layer_0/attention/Reshape_3_output_0");
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        m.Graph.Node.Add(new NodeProto { OpType = "Identity", Input = { "/encoder/layer_0/attention/Reshape_3_output_0" }, Output = { "y" }, Name = "/Identity" });
        File.WriteAllBytes(path, m.ToByteArray());
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path });
        Assert.Contains(model.Layers, l => l.Name == "/encoder/layer_0/attention/Softmax_output_0");
        using var scope = NewDisposeScope();
        using var capture = model.Capture(["/encoder/layer_0/attention/Softmax_output_0"], forGradients: false);
        model.Forward(tensor(Env.SinInput(2 * 3 * 8 * 8, 1.5, 0.1), [2, 3, 8, 8]));
        var p = capture["/encoder/layer_0/attention/Softmax_output_0"];
        Assert.Equal([2L, 2, 24, 24], p.shape);
        Assert.True(Env.Data(p.sum(-1)).All(s => Math.Abs(s - 1) < 1e-5));
    }

    /// <summary>The onnx-runtime backend runs ONNX Runtime's own operators left after the expansion only when the
    /// pipeline says it trusts the file: their kernels are not hardened (a valid Attention without a bias crashed the
    /// process). Those it expands, and FusedMatMul, load either way.</summary>
    [Fact]
    public void OnnxRuntimeRunsUnexpandedContribOperatorsOnlyWhenAllowed()
    {
        var path = Edited("gelu_ms", m => Fused(m).OpType = "QuickGeluV2");
        var e = Assert.Throws<LoupeException>(() => Env.LoadOrt(new OnnxOptions { Path = path }).Dispose());
        Assert.Contains("com.microsoft.QuickGeluV2", e.Message);
        Assert.Contains("contrib_operators: true", e.Message);
        foreach (var name in new[] { "attention", "fusedmatmul_a0b0_ba0bb0", "biasgelu" })
        {
            using var model = Env.LoadOrt(new OnnxOptions { Path = Env.Fixture($"ops-contrib/{name}.onnx") });
        }
        // Allowed, ONNX Runtime itself says what it cannot run.
        var allowed = Assert.ThrowsAny<Exception>(() => Env.LoadOrt(new OnnxOptions { Path = path, ContribOperators = true }).Dispose());
        Assert.Contains("QuickGeluV2", allowed.Message);
    }
}
