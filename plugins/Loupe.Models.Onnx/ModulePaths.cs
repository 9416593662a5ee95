namespace Loupe.Models.Onnx;

/// <summary>PyTorch module paths of a graph exported by <c>torch.onnx.export</c>: its node names carry the module scope
/// (<c>/layer4/layer4.1/relu_1/Relu</c>, <c>/encoder/layers/encoder_layer_0/ln_1/LayerNormalization</c>), so a module
/// path (<c>layer4</c>, <c>layer4.1.relu</c>, <c>features.7</c>) names the output of the last node run inside its scope
/// — the module's output, since the exporter emits nodes in execution order.</summary>
public static class ModulePaths
{
    /// <summary>Module path → (value it resolves to, operator producing it), in first-seen order.</summary>
    public static IReadOnlyList<(string Path, string Value, string Op)> Of(IEnumerable<OnnxNode> plan)
    {
        var last = new Dictionary<string, (string Value, string Op)>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var n in plan)
        {
            if (!n.Name.StartsWith('/')) continue;
            var output = n.Outputs.FirstOrDefault(o => o.Length > 0);
            if (output is null) continue;
            foreach (var path in Loupe.Abstractions.ModuleScopes.Of(n.Name))
            {
                if (!last.ContainsKey(path)) order.Add(path);
                last[path] = (output, n.OpType);
            }
        }
        return order.Select(p => (p, last[p].Value, last[p].Op)).ToList();
    }
}
