using Loupe.Abstractions;
using Onnx;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>One branch of an If node: its nodes (checked and bound), its own initializers and the values it returns.</summary>
internal sealed record Branch(IReadOnlyList<OnnxNode> Nodes, IReadOnlyDictionary<string, Tensor> Initializers, string[] Outputs);

public sealed partial class OnnxModel
{
    /// <summary>How deep If nodes may nest (torchvision's exports nest two).</summary>
    const int MaxBranchDepth = 8;

    /// <summary>Compiles the branches of every If node among <paramref name="nodes"/> (recursively), recording the
    /// enclosing values each reads; every operator in them is checked as the graph's own are.</summary>
    static void CompileBranches(IEnumerable<OnnxNode> nodes, OnnxFile file, List<Tensor> owned, int depth = 0)
    {
        foreach (var n in nodes.Where(n => n.OpType == "If"))
        {
            if (depth >= MaxBranchDepth) throw n.Error($"If nodes nest deeper than {MaxBranchDepth}");
            Branch Compile(string name)
            {
                var g = n.Attribute(name)?.G ?? throw n.Error($"has no {name}");
                var inner = g.Node.Select((b, i) => new OnnxNode(b, file.Opset, file.Source, i)).ToList();
                foreach (var b in inner) Ops.Check(b);
                foreach (var b in inner) Ops.Bind(b);
                CompileBranches(inner, file, owned, depth + 1);
                var init = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                using (no_grad())
                    foreach (var t in g.Initializer)
                    {
                        var v = OnnxFile.ToTensor(t, file.Source);
                        v.DetachFromDisposeScope();
                        owned.Add(v);
                        init[t.Name] = v;
                    }
                return new Branch(inner, init, g.Output.Select(o => o.Name).ToArray());
            }
            var then = Compile("then_branch");
            var @else = Compile("else_branch");
            if (then.Outputs.Length != @else.Outputs.Length || then.Outputs.Length < n.Outputs.Count(o => o.Length > 0))
                throw n.Error($"its branches return {then.Outputs.Length} and {@else.Outputs.Length} values for {n.Outputs.Length} outputs");
            n.Branches = (then, @else);
            n.OuterReads = OuterReadsOf(then).Concat(OuterReadsOf(@else)).Distinct().ToArray();
        }
    }

    /// <summary>The values a branch reads that it neither computes nor holds.</summary>
    static IEnumerable<string> OuterReadsOf(Branch b)
    {
        var own = new HashSet<string>(b.Initializers.Keys, StringComparer.Ordinal);
        var reads = new List<string>();
        foreach (var n in b.Nodes)
        {
            reads.AddRange(n.Reads.Where(r => !own.Contains(r)));
            own.UnionWith(n.Outputs.Where(o => o.Length > 0));
        }
        return reads.Concat(b.Outputs.Where(o => !own.Contains(o))).Distinct();
    }

    /// <summary>Runs one node over the values computed so far: an If node runs the branch its condition picks, over
    /// the enclosing values; any other node its operator.</summary>
    static Tensor[] Evaluate(OnnxNode n, IReadOnlyDictionary<string, Tensor> env)
    {
        if (n.Branches is not { } branches)
            return Run(n, n.Inputs.Select(i => i.Length > 0 ? env[i] : null).ToArray());
        var condition = env[n.Inputs[0]];
        if (condition.numel() != 1) throw n.Error($"its condition has {condition.numel()} values, not one");
        var branch = condition.to(ScalarType.Bool).item<bool>() ? branches.Then : branches.Else;
        var inner = new Dictionary<string, Tensor>(env.Count + branch.Initializers.Count, StringComparer.Ordinal);
        foreach (var (k, v) in env) inner[k] = v;
        foreach (var (k, v) in branch.Initializers) inner[k] = v;
        foreach (var b in branch.Nodes)
        {
            var outs = Evaluate(b, inner);
            for (int k = 0; k < b.Outputs.Length && k < outs.Length; k++)
                if (b.Outputs[k].Length > 0) inner[b.Outputs[k]] = outs[k];
        }
        return branch.Outputs.Select(o => inner.TryGetValue(o, out var v) ? v : throw n.Error($"its branch never computes '{o}'")).ToArray();
    }
}
