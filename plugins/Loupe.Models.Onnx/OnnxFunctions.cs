using Loupe.Abstractions;
using Onnx;

namespace Loupe.Models.Onnx;

/// <summary>Model-local functions (<c>ModelProto.functions</c>, IR 8+) expanded into the main graph at load, so both
/// backends, the shape pass and module paths see plain operators: what PyTorch's <c>dynamo_export</c> (2.1–2.5) and
/// <c>export_modules_as_functions</c> write, and what any ONNX tool may. A call's node becomes the function's nodes, its
/// inputs and outputs bound to the caller's, its values renamed apart, attributes that refer to the caller's
/// (<c>ref_attr_name</c>) given the caller's value or the function's default. The file is untrusted: calls nested
/// deeper than <see cref="MaxDepth"/> (a recursive function) and expansions past <see cref="MaxNodes"/> nodes (functions
/// calling functions twice, doubling at each level) are refused by name.</summary>
public static class OnnxFunctions
{
    /// <summary>Deepest nesting of function calls expanded.</summary>
    public const int MaxDepth = 32;
    /// <summary>Most nodes the expanded graph may have.</summary>
    public const int MaxNodes = 1_000_000;

    /// <summary>Replaces every call of a model-local function in the main graph by the function's body.</summary>
    public static void Inline(ModelProto model, long opset, string source)
    {
        if (model.Functions.Count == 0) return;
        var functions = new Dictionary<(string, string, string), FunctionProto>();
        foreach (var f in model.Functions)
        {
            if (!functions.TryAdd((f.Domain, f.Name, f.Overload), f))
                throw new LoupeException($"{source}: function '{f.Domain}.{f.Name}' is defined twice");
            var own = f.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).DefaultIfEmpty(opset).Max();
            if (own != opset)
                throw new LoupeException($"{source}: function '{f.Domain}.{f.Name}' imports ONNX opset {own}, the model {opset}; functions of another opset are not supported");
        }
        // The expanded size first (each function's once, memoised), so a recursive or exponential file is refused
        // before anything is copied.
        var sizes = new Dictionary<FunctionProto, long>();
        long Size(NodeProto node, int depth)
        {
            if (!functions.TryGetValue((node.Domain, node.OpType, node.Overload), out var f)) return 1;
            if (depth >= MaxDepth) throw new LoupeException($"{source}: function calls nest deeper than {MaxDepth} ('{f.Domain}.{f.Name}' calls itself?)");
            if (sizes.TryGetValue(f, out var known)) return known;
            long size = 0;
            foreach (var b in f.Node) size = Math.Min(size + Size(b, depth + 1), MaxNodes + 1L);
            return sizes[f] = size;
        }
        long count = 0;
        foreach (var node in model.Graph.Node) count = Math.Min(count + Size(node, 0), MaxNodes + 1L);
        if (count > MaxNodes) throw new LoupeException($"{source}: its functions expand to more than {MaxNodes:N0} nodes");
        int calls = 0, total = 0;
        var expanded = new List<NodeProto>();
        void Expand(NodeProto node, int depth)
        {
            if (!functions.TryGetValue((node.Domain, node.OpType, node.Overload), out var f))
            {
                if (++total > MaxNodes) throw new LoupeException($"{source}: its functions expand to more than {MaxNodes:N0} nodes");
                expanded.Add(node);
                return;
            }
            if (depth >= MaxDepth) throw new LoupeException($"{source}: function calls nest deeper than {MaxDepth} ('{f.Domain}.{f.Name}' calls itself?)");
            if (f.Node.Any(b => b.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)))
                throw new LoupeException($"{source}: function '{f.Domain}.{f.Name}' holds subgraphs (If, Loop); functions with subgraphs are not supported");
            string prefix = $"{f.Name}__{calls++}/";
            var names = new Dictionary<string, string>(StringComparer.Ordinal) { [""] = "" };
            for (int i = 0; i < f.Input.Count; i++) names[f.Input[i]] = i < node.Input.Count ? node.Input[i] : "";
            for (int i = 0; i < f.Output.Count; i++) names[f.Output[i]] = i < node.Output.Count ? node.Output[i] : "";
            string Bound(string value) => names.TryGetValue(value, out var outer) ? outer : prefix + value;
            var given = node.Attribute.GroupBy(a => a.Name, StringComparer.Ordinal).ToDictionary(a => a.Key, a => a.First(), StringComparer.Ordinal);   // (a repeated name: the first)
            var defaults = f.AttributeProto.GroupBy(a => a.Name, StringComparer.Ordinal).ToDictionary(a => a.Key, a => a.First(), StringComparer.Ordinal);
            foreach (var b in f.Node)
            {
                var copy = b.Clone();
                copy.Input.Clear();
                copy.Input.Add(b.Input.Select(Bound));
                copy.Output.Clear();
                copy.Output.Add(b.Output.Select(Bound));
                copy.Name = (node.Name.Length > 0 ? node.Name : node.OpType) + "/" + (b.Name.Length > 0 ? b.Name : b.OpType);
                if (copy.MetadataProps.Count == 0) copy.MetadataProps.Add(node.MetadataProps);
                foreach (var a in b.Attribute.Where(a => a.RefAttrName.Length > 0))
                {
                    copy.Attribute.Remove(copy.Attribute.First(c => c.Name == a.Name));
                    if ((given.GetValueOrDefault(a.RefAttrName) ?? defaults.GetValueOrDefault(a.RefAttrName)) is { } value)
                    {
                        var bound = value.Clone();
                        bound.Name = a.Name;
                        copy.Attribute.Add(bound);
                    }
                }
                Expand(copy, depth + 1);
            }
        }
        foreach (var node in model.Graph.Node) Expand(node, 0);
        model.Graph.Node.Clear();
        model.Graph.Node.Add(expanded);
        model.Functions.Clear();
    }
}
