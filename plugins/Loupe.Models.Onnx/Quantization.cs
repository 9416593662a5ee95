using Google.Protobuf;
using Loupe.Abstractions;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Quantised graphs in ONNX's QDQ form — what <c>torch.onnx.export</c> writes for torchvision's quantised
/// models (<c>torchvision.models.quantization</c>) and for quantisation-aware-trained models, and what ONNX Runtime's
/// quantiser writes by default: int8 weights behind DequantizeLinear, and each activation through a
/// QuantizeLinear → (Cast →) DequantizeLinear pair, around float operators. The <c>onnx</c> backend runs them as PyTorch
/// simulates quantisation: a pair is one fake quantisation, y = (clamp(round(x / s) + z, q_min, q_max) − z)·s (round
/// half to even, q_min, q_max of the zero point's type), whose gradient is the straight-through estimator of PyTorch's
/// <c>fake_quantize_per_tensor_affine</c> / <c>_per_channel_affine</c> (1 where round(x / s) + z lies in [q_min,
/// q_max], else 0) — without it every gradient through a quantised activation would be 0. A QuantizeLinear whose output
/// is read otherwise gives the integers (no gradient); DequantizeLinear (z − and × s, per tensor or along
/// <c>axis</c>) is a standard operator. Forward values equal ONNX Runtime's run of the graph operator by operator (its
/// integer kernels, which fuse a pair into QLinearConv and the like, may round differently by a quantisation step).</summary>
public static class Quantization
{
    /// <summary>The domain of the interpreter's own operators (never in a file: the load rewrites into them).</summary>
    public const string Domain = "loupe";

    /// <summary>The nodes of <paramref name="graph"/> as the interpreter runs them: each QuantizeLinear → (Cast →)
    /// DequantizeLinear pair with the same scale and zero point as one <c>loupe.QuantizeDequantize</c>, any other
    /// QuantizeLinear as <c>loupe.Quantize</c>; both carry q_min and q_max (from the zero point's type).</summary>
    public static List<NodeProto> Prepare(GraphProto graph, long opset, string source)
    {
        OnnxContrib.ExpandQuantized(graph, opset, source);   // the QOperator form (QLinearConv, …) into this QDQ form
        var nodes = graph.Node.ToList();
        if (!nodes.Any(n => n.OpType == "QuantizeLinear" && n.Domain is "" or "ai.onnx")) return nodes;
        var constants = OnnxContrib.Constants(graph, nodes);
        var readers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var n in nodes)
            foreach (var i in n.Input.Where(i => i.Length > 0).Distinct())
                (readers.TryGetValue(i, out var l) ? l : readers[i] = []).Add(n);
        var outputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);

        var removed = new HashSet<NodeProto>();
        var replaced = new Dictionary<NodeProto, NodeProto>();
        foreach (var q in nodes.Where(n => n.OpType == "QuantizeLinear" && n.Domain is "" or "ai.onnx"))
        {
            string Where() => $"{source}: QuantizeLinear node '{(q.Name.Length > 0 ? q.Name : q.Output.FirstOrDefault())}'";
            if (q.Input.Count < 2 || q.Output.Count < 1) throw new LoupeException($"{Where()}: needs an input, a scale and an output");
            if (q.Attribute.FirstOrDefault(a => a.Name == "block_size") is { I: not 0 }) throw new LoupeException($"{Where()}: block quantisation (block_size) is not supported");
            var type = ZeroPointType(q, q.Input.Count > 2 ? q.Input[2] : "", constants)
                ?? throw new LoupeException($"{Where()}: its zero point is computed in the graph, not a constant; such graphs are not supported");
            var (min, max) = Range(type) ?? throw new LoupeException($"{Where()}: quantising to {type} is not supported (int8, uint8, int16, uint16, int4, uint4)");
            long axis = q.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1;
            // The pair: Q → (Cast to Q's own type, an identity; to another it would wrap →) DQ of the same scale, zero point and axis — each reader of Q's
            // integers (a value read by two layers, a residual's, is dequantised twice, each through its own Cast).
            bool Matches(NodeProto dq, string value) => dq is { OpType: "DequantizeLinear", Domain: "" or "ai.onnx" } && dq.Input.Count >= 2 && dq.Output.Count >= 1 && dq.Input[0] == value
                && dq.Attribute.FirstOrDefault(a => a.Name == "block_size") is null or { I: 0 }
                && ((dq.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1) == axis || OnnxContrib.PerTensor(q.Input[1], constants))   // (a per-tensor scale's axis says nothing)
                && Same(q.Input[1], dq.Input[1], constants) && Same(q.Input.Count > 2 ? q.Input[2] : "", dq.Input.Count > 2 ? dq.Input[2] : "", constants);
            List<NodeProto>? Readers(string value) => !outputs.Contains(value) && readers.TryGetValue(value, out var l) ? l : null;
            var ends = new List<NodeProto>();
            var between = new List<NodeProto>();
            bool pair = Readers(q.Output[0]) is { Count: > 0 } first && first.All(r =>
            {
                if (Matches(r, q.Output[0])) { ends.Add(r); return true; }
                if (r.OpType != "Cast" || r.Output.Count == 0 || !CastsTo(r, type) || Readers(r.Output[0]) is not { Count: > 0 } next || !next.All(d => Matches(d, r.Output[0]))) return false;
                between.Add(r);
                ends.AddRange(next);
                return true;
            });
            // Read only as the integers of MatMulInteger/ConvInteger (ONNX Runtime's MatMulIntegerToFloat, expanded): float
            // integers with the straight-through gradient, which the product's scaling after carries on.
            bool products = !pair && Readers(q.Output[0]) is { Count: > 0 } users && users.All(r => r.OpType is "MatMulInteger" or "ConvInteger" && r.Input[0] == q.Output[0] && !r.Input.Skip(1).Contains(q.Output[0]));
            var node = new NodeProto { Domain = Domain, OpType = pair ? "QuantizeDequantize" : products ? "QuantizeStraightThrough" : "Quantize", Name = q.Name, DocString = q.DocString };
            node.Input.Add(q.Input);
            if (pair) node.Output.Add(ends.Select(d => d.Output[0]));
            else node.Output.Add(q.Output[0]);
            node.Attribute.Add(new AttributeProto { Name = "q_min", Type = AttributeProto.Types.AttributeType.Int, I = min });
            node.Attribute.Add(new AttributeProto { Name = "q_max", Type = AttributeProto.Types.AttributeType.Int, I = max });
            node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = axis });
            replaced[q] = node;
            if (pair) removed.UnionWith(ends.Concat(between));
        }
        return nodes.Where(n => !removed.Contains(n)).Select(n => replaced.GetValueOrDefault(n, n)).ToList();
    }

    static bool CastsTo(NodeProto cast, TensorProto.Types.DataType type) => cast.Attribute.FirstOrDefault(a => a.Name == "to") is { } to && (TensorProto.Types.DataType)to.I == type;

    /// <summary>The type of a QuantizeLinear's output: its zero point's, else <c>output_dtype</c>, else uint8; null when
    /// the zero point is not a constant.</summary>
    static TensorProto.Types.DataType? ZeroPointType(NodeProto q, string zeroPoint, Dictionary<string, TensorProto> constants)
    {
        if (zeroPoint.Length > 0) return constants.TryGetValue(zeroPoint, out var z) ? (TensorProto.Types.DataType)z.DataType : null;
        return q.Attribute.FirstOrDefault(a => a.Name == "output_dtype") is { I: not 0 } o ? (TensorProto.Types.DataType)o.I : TensorProto.Types.DataType.Uint8;
    }

    internal static (long Min, long Max)? Range(TensorProto.Types.DataType type) => type switch
    {
        TensorProto.Types.DataType.Uint8 => (0, 255),
        TensorProto.Types.DataType.Int8 => (-128, 127),
        TensorProto.Types.DataType.Uint16 => (0, 65535),
        TensorProto.Types.DataType.Int16 => (-32768, 32767),
        TensorProto.Types.DataType.Uint4 => (0, 15),
        TensorProto.Types.DataType.Int4 => (-8, 7),
        _ => null,
    };

    /// <summary>Whether two inputs are the same value or constants of equal contents (an exporter writes a pair's scale
    /// twice, as two Constant nodes); an absent zero point equals a constant of zeros.</summary>
    internal static bool Same(string a, string b, IReadOnlyDictionary<string, TensorProto> constants)
    {
        if (a == b) return true;
        if (a.Length == 0) (a, b) = (b, a);
        if (!constants.TryGetValue(a, out var x) || (b.Length > 0 && !constants.TryGetValue(b, out _))) return false;
        var y = b.Length > 0 ? constants[b] : null;
        static bool Small(TensorProto t) => t.Dims.Count <= 1 && t.Dims.All(d => d is >= 0 and <= 65536);
        if (!Small(x) || (y is not null && !Small(y))) return false;
        using var scope = NewDisposeScope();
        try
        {
            var tx = OnnxFile.ToTensor(x, "");
            if (y is null) return tx.eq(0).all().item<bool>();
            var ty = OnnxFile.ToTensor(y, "");
            return tx.numel() == ty.numel() && tx.flatten().eq(ty.flatten().to(tx.dtype)).all().item<bool>();
        }
        catch (LoupeException) { return false; }   // a malformed constant: the load refuses it by name where it is read
    }
}
