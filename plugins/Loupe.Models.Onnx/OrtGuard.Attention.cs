namespace Loupe.Models.Onnx;

public static partial class OrtGuard
{
    /// <summary>Opset 23's Attention that ONNX Runtime 1.31's kernel would divide by zero on (the process dies of
    /// SIGFPE; found by tools/Loupe.Fuzz's onnx-runtime target): an empty query, key or value (keys sliced to nothing);
    /// 4-D inputs whose query heads the key's do not divide; 3-D inputs (batch × sequence × hidden, the heads given by
    /// the attributes) without q_num_heads and kv_num_heads of at least 1 (kv_num_heads 0), or whose hidden sizes and
    /// query heads those do not divide.</summary>
    static void CheckAttention(OnnxNode n, V?[] ins)
    {
        string[] names = ["query", "key", "value"];
        for (int k = 0; k < Math.Min(3, ins.Length); k++)
            if (ins[k] is { } v && v.Shape.Any(d => d == 0))
                throw n.Error($"its {names[k]} ({string.Join("×", v.Shape)}) is empty");
        if (ins.Length > 1 && ins[0] is { Shape.Length: 4 } q && ins[1] is { Shape.Length: 4 } key && key.Shape[1] > 0 && q.Shape[1] % key.Shape[1] != 0)
            throw n.Error($"its query's {q.Shape[1]} heads are not a multiple of the key's {key.Shape[1]}");
        if (!ins.Take(3).Any(v => v is { Shape.Length: 3 })) return;
        long qHeads = n.Int("q_num_heads", 0), kvHeads = n.Int("kv_num_heads", 0);
        if (qHeads < 1 || kvHeads < 1)
            throw n.Error($"its inputs are 3-D (batch × sequence × hidden), which need q_num_heads and kv_num_heads of at least 1 (here {qHeads} and {kvHeads})");
        if (qHeads % kvHeads != 0) throw n.Error($"its q_num_heads ({qHeads}) is not a multiple of kv_num_heads ({kvHeads})");
        for (int k = 0; k < Math.Min(3, ins.Length); k++)
            if (ins[k] is { Shape.Length: 3 } v && v.Shape[2] > 0 && v.Shape[2] % (k == 0 ? qHeads : kvHeads) != 0)
                throw n.Error($"its {names[k]}'s hidden size {v.Shape[2]} is not a multiple of its {(k == 0 ? $"q_num_heads ({qHeads})" : $"kv_num_heads ({kvHeads})")}");
    }
}
