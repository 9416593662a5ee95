using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

// Parameters handed out for change (IModel.GetParameter: the randomisation metrics overwrite them in place) reach every
// tensor the load computed from them: the constants folded from them (a Transpose or Cast of a weight, ...) are
// recomputed before each forward from then on, and the fused linear layers that read them multiply by the live weight
// instead of their transposed copy (found on torchvision's ViT: its MLP weights, overwritten, left the fused forward as
// it was). Reading them (IModelParameterReader) changes nothing.
public sealed partial class OnnxModel : IModelParameterReader
{
    /// <summary>Per parameter name, the constant it is or views (an initializer's or a folded value's name).</summary>
    readonly Dictionary<string, string> _parameterValue = new(StringComparer.Ordinal);
    /// <summary>The nodes folded at load, in load order (a topological order).</summary>
    readonly List<OnnxNode> _foldedNodes = new();
    /// <summary>Constants that may change: handed out, or folded from such.</summary>
    readonly HashSet<string> _liveValues = new(StringComparer.Ordinal);
    /// <summary>The folded nodes that read a live constant, in load order: recomputed before each forward.</summary>
    List<OnnxNode> _refold = new();
    /// <summary>Transposed views registered as PyTorch weights (<see cref="NameLinearWeights"/>), freed with the model.</summary>
    readonly List<Tensor> _parameterViews = new();

    /// <inheritdoc/>
    public Tensor? ReadParameter(string name) => _parameters.GetValueOrDefault(name);

    /// <inheritdoc/>
    public Tensor? GetParameter(string name)
    {
        var t = _parameters.GetValueOrDefault(name);
        if (t is not null && _parameterValue.TryGetValue(name, out var value)) Live(value);
        return t;
    }

    /// <summary>Whether the constant <paramref name="value"/> may have changed since load (the fused plan then reads it
    /// as it is now).</summary>
    bool IsLive(string value) => _liveValues.Count > 0 && _liveValues.Contains(value);

    /// <summary>Marks a constant as changeable, and every folded value computed from it.</summary>
    void Live(string value)
    {
        lock (_gate)
        {
            if (!_liveValues.Add(value)) return;
            foreach (var n in _foldedNodes)
                if (n.Reads.Any(_liveValues.Contains))
                    foreach (var o in n.Outputs) if (o.Length > 0) _liveValues.Add(o);
            _refold = _foldedNodes.Where(n => n.Reads.Any(_liveValues.Contains)).ToList();
        }
    }

    /// <summary>Recomputes the folded values that depend on a handed-out parameter, in place (the fused plan and the
    /// graph form hold those tensors).</summary>
    void Refold()
    {
        List<OnnxNode> refold;
        lock (_gate) refold = _refold;
        if (refold.Count == 0) return;
        using var _ = no_grad();
        foreach (var n in refold)
        {
            using var scope = NewDisposeScope();
            var outs = Evaluate(n, _constants);
            for (int k = 0; k < n.Outputs.Length && k < outs.Length; k++)
            {
                if (n.Outputs[k].Length == 0 || !_constants.TryGetValue(n.Outputs[k], out var c)) continue;
                if (!c.shape.SequenceEqual(outs[k].shape))
                    throw n.Error($"computes a constant of shape ({string.Join("×", outs[k].shape)}) from changed parameters, not ({string.Join("×", c.shape)}) as at load: a parameter's shape was changed");
                c.copy_(outs[k]);
            }
        }
    }

    /// <summary>A linear layer that torch.onnx exports for inputs of more than two dims (ViT's and Swin's MLPs and
    /// attention projections, ConvNeXt's pointwise layers) multiplies by an anonymous constant (the weight, transposed
    /// at export: in × out) and adds its module's bias: that weight is listed under the module's PyTorch name instead
    /// (<c>X.weight</c> beside <c>X.bias</c>, <c>X.in_proj_weight</c> beside <c>X.in_proj_bias</c>), shaped as PyTorch
    /// holds it (out × in: a transposed view of the constant, so writes reach it), so that a module's tensors are
    /// randomised together and PyTorch's reset_parameters draws for it what it draws for the module. A bias-free linear
    /// layer (Swin's patch merging) has no bias to name it: its MatMul's node name gives the module's scope
    /// (<c>/features/features.2/reduction/MatMul</c>), taken when that MatMul is the only node run inside it.</summary>
    void NameLinearWeights(List<OnnxNode> nodes)
    {
        var readers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        foreach (var n in nodes)
            foreach (var v in n.Reads) (readers.TryGetValue(v, out var l) ? l : readers[v] = []).Add(n);
        var inScope = nodes.Where(n => n.Name.StartsWith('/')).GroupBy(n => ModuleScopes.Innermost(n.Name) ?? "")
            .ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        foreach (var n in nodes)
        {
            if (n.OpType != "MatMul" || n.Inputs.Length != 2 || n.Outputs.Length != 1) continue;
            string wName = n.Inputs[1];
            if (!_constants.TryGetValue(wName, out var w) || w.dim() != 2 || !w.is_floating_point() || _constants.ContainsKey(n.Inputs[0])) continue;
            // Only an anonymous constant (onnx::MatMul_317): a PyTorch parameter keeps its dotted path.
            if (_parameters.Any(p => ReferenceEquals(p.Value, w) && p.Key.Contains('.'))) continue;
            string? alias = null;
            if (readers.TryGetValue(n.Outputs[0], out var after) && after is [{ OpType: "Add", Inputs.Length: 2 } add])
            {
                string bName = add.Inputs[0] == n.Outputs[0] ? add.Inputs[1] : add.Inputs[0];
                if (bName.EndsWith("bias", StringComparison.Ordinal) && _constants.TryGetValue(bName, out var b) && b.dim() == 1 && b.shape[0] == w.shape[1])
                    alias = bName[..^4] + "weight";
            }
            if (alias is null && n.Name.StartsWith('/') && ModuleScopes.Innermost(n.Name) is { Length: > 0 } module && inScope.GetValueOrDefault(module) == 1)
                alias = module + ".weight";
            if (alias is null || _parameters.ContainsKey(alias)) continue;
            var view = w.t();
            view.DetachFromDisposeScope();
            _parameterViews.Add(view);
            // The constant's own (anonymous) names go: one tensor, one name, in the module it belongs to.
            foreach (var name in _parameters.Where(p => ReferenceEquals(p.Value, w)).Select(p => p.Key).ToList()) _parameters.Remove(name);
            _parameters[alias] = view;
            _parameterValue[alias] = wName;
        }
    }
}
