using Loupe.Abstractions;
using Onnx;

namespace Loupe.Models.Onnx;

/// <summary>ONNX Runtime's attention operators (its transformer optimiser writes them for a ViT's self-attention)
/// expanded into what an exporter writes for scaled dot-product attention — MatMul, Reshape, Transpose, Softmax — so
/// that attention rollout and the layers inside attention read the probabilities as on an exported graph. The vision
/// subset: no key-value cache, no token masks (a text model's mask_index / key_padding_mask), not causal, no rotary
/// embeddings; each refused by name.</summary>
public static partial class OnnxContrib
{
    sealed partial class Emitter
    {
        static AttributeProto Ints(string name, params long[] v) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { v } };

        void RefuseCacheAndMasks(int mask, int[] cache, int[] cacheOutputs, string maskName)
        {
            if (Optional(mask) is not null) throw Error($"{maskName} (a text model's token mask) is not supported");
            if (cache.Any(i => Optional(i) is not null) || cacheOutputs.Any(i => Out(i).Length > 0))
                throw Error("a key-value cache (past and present inputs and outputs) is not supported");
            if (IntAttr("unidirectional", 0) != 0) throw Error("unidirectional (causal) attention is not supported");
            if (IntAttr("do_rotary", 0) != 0) throw Error("rotary embeddings (do_rotary) are not supported");
        }

        long Heads() => IntAttr("num_heads", 0) is var h and >= 1 ? h : throw Error("num_heads must be given and at least 1");

        /// <summary>B×S×(N·H) → B×N×S×H (or B×N×H×S for the keys: <paramref name="keys"/>).</summary>
        string SplitHeads(string x, long heads, bool keys, string scope) =>
            Step("Transpose", [Step("Reshape", [x, Constant([0L, 0, heads, -1])], scope)], scope, Ints("perm", keys ? [0, 2, 3, 1] : [0, 2, 1, 3]));

        /// <summary>softmax(scale·QKᵀ + attention_bias)·V, heads joined into B×S×(N·Hv) as <see cref="Out"/>(0).
        /// <paramref name="headSize"/>: H when known at load, else 1/√H is taken from Q's shape at run time.</summary>
        void Scaled(string q, string kT, string v, string? attentionBias, long? headSize, string scope)
        {
            var scores = Step("MatMul", [q, kT], scope);
            float given = FloatAttr("scale") ?? 0f;
            if (given != 0f || headSize is not null)
                scores = Step("Mul", [scores, Constant(given != 0f ? given : 1f / MathF.Sqrt(headSize!.Value))], scope);
            else
            {
                var h = Step("Gather", [Step("Shape", [q], scope), Constant([3L])], scope, new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
                var root = Step("Sqrt", [Step("Cast", [h], scope, new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)TensorProto.Types.DataType.Float })], scope);
                scores = Step("Div", [scores, root], scope);
            }
            if (attentionBias is not null) scores = Step("Add", [scores, attentionBias], scope);
            var probabilities = Step("Softmax", [scores], scope, new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 3 });
            var context = Step("Transpose", [Step("MatMul", [probabilities, v], scope)], scope, Ints("perm", 0, 2, 1, 3));
            Node("Reshape", [context, Constant([0L, 0, -1])], [Out(0)], scope);
        }

        /// <summary>Attention: Q, K, V = input·weights (+ bias), split by qkv_hidden_sizes (default: thirds of the
        /// weights' columns), then <see cref="Scaled"/>; attention_bias (input 5) added to the scores.</summary>
        public void Attention()
        {
            RefuseCacheAndMasks(3, [4, 6], [1], "mask_index");
            long heads = Heads();
            long[] sizes = _n.Attribute.FirstOrDefault(a => a.Name == "qkv_hidden_sizes") is { } q ? q.Ints.ToArray()
                : constants.TryGetValue(In(1), out var w) && w.Dims.Count == 2 && w.Dims[1] % 3 == 0 ? [w.Dims[1] / 3, w.Dims[1] / 3, w.Dims[1] / 3]
                : throw Error("its weights are not a constant of 3·hidden columns and qkv_hidden_sizes is not given");
            if (sizes.Length != 3 || sizes[0] != sizes[1] || sizes.Any(s => s <= 0 || s % heads != 0))
                throw Error($"qkv_hidden_sizes ({string.Join(", ", sizes)}) must be three sizes, Q's equal to K's, each a multiple of num_heads ({heads})");
            string scope = ScopeOf(Out(0));
            var qkv = Step("MatMul", [In(0), In(1)], scope);
            if (Optional(2) is { } bias) qkv = Step("Add", [qkv, bias], scope);
            var split = Node("Split", opset >= 13 ? new[] { qkv, Constant(sizes) } : [qkv], [""], scope);
            if (opset < 13) split.Attribute.Add(Ints("split", sizes));
            split.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
            split.Output.Clear();
            split.Output.Add(new[] { "q", "k", "v" }.Select(part => names.Value($"{split.Name}_{part}")));
            Scaled(SplitHeads(split.Output[0], heads, false, scope), SplitHeads(split.Output[1], heads, true, scope), SplitHeads(split.Output[2], heads, false, scope),
                Optional(5), sizes[0] / heads, scope);
        }

        /// <summary>MultiHeadAttention of separate B×S×D query, B×L×D key and B×L×Dv value (+ their biases: the bias
        /// input's three parts, cut at D and 2D, D read from the query's shape at run time), then <see cref="Scaled"/>;
        /// attention_bias (input 5) added to the scores.</summary>
        public void MultiHeadAttention()
        {
            RefuseCacheAndMasks(4, [6, 7, 8, 9], [1, 2], "key_padding_mask");
            if (Out(3).Length > 0) throw Error("the qk output is not supported");
            if (Optional(1) is null || Optional(2) is null) throw Error("packed QKV or KV (no separate key and value) is not supported");
            long heads = Heads();
            string scope = ScopeOf(Out(0));
            string query = In(0), key = In(1), value = In(2);
            if (Optional(3) is { } bias)
            {
                if (opset < 10) throw Error("its bias needs ONNX opset 10 or later here (Slice by inputs)");
                // d = Q's hidden size as a 1-element tensor; the bias is [Q | K | V] at 0, d, 2d.
                var d = Step("Gather", [Step("Shape", [query], scope), Constant([2L])], scope, new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
                var twice = Step("Mul", [d, Constant([2L])], scope);
                string Part(string from, string to) => Step("Slice", [bias, from, to, Constant([0L])], scope);
                query = Step("Add", [query, Part(Constant([0L]), d)], scope);
                key = Step("Add", [key, Part(d, twice)], scope);
                value = Step("Add", [value, Part(twice, Constant([long.MaxValue]))], scope);
            }
            Scaled(SplitHeads(query, heads, false, scope), SplitHeads(key, heads, true, scope), SplitHeads(value, heads, false, scope), Optional(5), null, scope);
        }
    }
}
