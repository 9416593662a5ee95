using Google.Protobuf;

namespace Loupe.Onnx.Tests;

/// <summary>ONNX Runtime's integer kernels as an exact reference on every x86 processor. Where the processor lacks VNNI
/// (AVX2 or AVX-512 alone), ONNX Runtime multiplies uint8 activations by int8 weights with vpmaddubsw, which adds each
/// pair of products into a saturating int16 — integer products are then not ONNX's exact int32 sums (OpenVINO's
/// "saturation issue" page describes the same instructions), and a graph with int8 weights reads 0.2 rel. L2 away from
/// exact arithmetic on such a machine. The same graph with each int8 weight w and its zero point z stored as uint8 w + 128
/// and z + 128 computes the same numbers ((w + 128) − (z + 128) = w − z) through the uint8×uint8 kernels, which widen to
/// int16 before multiplying and are exact everywhere.</summary>
public static class OrtExactIntegers
{
    /// <summary>Weight and weight-zero-point input positions of the integer operators.</summary>
    static readonly Dictionary<string, (int Weight, int ZeroPoint)> Operators = new()
    {
        ["MatMulInteger"] = (1, 3), ["ConvInteger"] = (1, 3), ["DynamicQuantizeMatMul"] = (1, 3), ["MatMulIntegerToFloat"] = (1, 3),
        ["QLinearConv"] = (3, 5), ["QLinearMatMul"] = (3, 5), ["QGemm"] = (3, 5),
    };

    /// <summary>Whether this processor's ONNX Runtime multiplies uint8 by int8 exactly (VNNI, or not x86 at all).</summary>
    public static bool ExactUnsignedBySigned()
    {
        if (System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture is not (System.Runtime.InteropServices.Architecture.X64 or System.Runtime.InteropServices.Architecture.X86)) return true;
        if (System.Runtime.Intrinsics.X86.AvxVnni.IsSupported) return true;
        return File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo").Split((char[])[' ', '\t', '\n']).Contains("avx512_vnni");
    }

    /// <summary>The file ONNX Runtime should run as the exact reference for <paramref name="path"/>: the file itself where
    /// its products are exact, else a copy (in <paramref name="folder"/>) with its int8 weights stored as uint8.</summary>
    public static string Reference(string path, string folder)
    {
        if (ExactUnsignedBySigned()) return path;
        var model = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var g = model.Graph;
        var initializers = g.Initializer.ToDictionary(t => t.Name);
        var shifted = new HashSet<string>();
        // Activation zero points made by DynamicQuantizeLinear (always uint8).
        var quantizedByRange = g.Node.Where(n => n.OpType == "DynamicQuantizeLinear" && n.Output.Count > 2).Select(n => n.Output[2]).ToHashSet();
        bool changed = false;
        foreach (var node in g.Node)
        {
            if (!Operators.TryGetValue(node.OpType, out var at) || node.Input.Count <= at.Weight) continue;
            if (!initializers.TryGetValue(node.Input[at.Weight], out var weight) || weight.DataType != (int)global::Onnx.TensorProto.Types.DataType.Int8) continue;
            if (!UnsignedActivations(node, initializers, quantizedByRange)) continue;   // int8 × int8: no saturating path
            if (shifted.Add(weight.Name)) Shift(weight);
            while (node.Input.Count <= at.ZeroPoint) node.Input.Add("");
            if (node.Input[at.ZeroPoint] is { Length: > 0 } zp && initializers.TryGetValue(zp, out var zero))
            {
                if (zero.DataType != (int)global::Onnx.TensorProto.Types.DataType.Int8)
                    throw new InvalidOperationException($"{path}: {node.OpType}'s int8 weight has a zero point of type {zero.DataType}");
                if (shifted.Add(zero.Name)) Shift(zero);
            }
            else
            {
                var name = $"{weight.Name}_exact_zero_point";
                if (!initializers.ContainsKey(name))
                {
                    var z = new global::Onnx.TensorProto { Name = name, DataType = (int)global::Onnx.TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(128) };
                    g.Initializer.Add(z);
                    initializers[name] = z;
                }
                node.Input[at.ZeroPoint] = name;
            }
            changed = true;
        }
        if (!changed) return path;
        Directory.CreateDirectory(folder);
        string copy = Path.Combine(folder, Path.GetFileNameWithoutExtension(path) + ".u8u8.onnx");
        File.WriteAllBytes(copy, model.ToByteArray());
        return copy;
    }

    /// <summary>Whether the operator's activations are uint8: DynamicQuantizeMatMul quantises its float input so; the
    /// others by the type of their activation zero point (input 2): a uint8 initializer, or DynamicQuantizeLinear's.</summary>
    static bool UnsignedActivations(global::Onnx.NodeProto node, Dictionary<string, global::Onnx.TensorProto> initializers, HashSet<string> quantizedByRange)
    {
        if (node.OpType == "DynamicQuantizeMatMul") return true;
        if (node.Input.Count <= 2 || node.Input[2].Length == 0) return false;
        return initializers.TryGetValue(node.Input[2], out var zp)
            ? zp.DataType == (int)global::Onnx.TensorProto.Types.DataType.Uint8
            : quantizedByRange.Contains(node.Input[2]);
    }

    /// <summary>An int8 tensor's values + 128, stored as uint8.</summary>
    static void Shift(global::Onnx.TensorProto t)
    {
        if (t.RawData.Length > 0) t.RawData = ByteString.CopyFrom([.. t.RawData.Select(b => (byte)((sbyte)b + 128))]);
        else
            for (int i = 0; i < t.Int32Data.Count; i++) t.Int32Data[i] += 128;
        t.DataType = (int)global::Onnx.TensorProto.Types.DataType.Uint8;
    }
}
