using static TorchSharp.torch;

namespace Loupe.Abstractions.Toolkit;

/// <summary>The captured outputs of one <see cref="ILayerCapture"/>, one slot per layer name (thread-safe): what every
/// model backend keeps from a forward pass. A new capture of a layer replaces (and disposes) the previous one; the
/// slots own their tensors (detached from any dispose scope) until <see cref="Dispose"/>.</summary>
public sealed class CaptureSlots : IDisposable
{
    readonly Dictionary<string, Tensor> _captured = new(StringComparer.Ordinal);
    readonly object _gate = new();

    /// <summary>Keeps a layer's <paramref name="output"/> and returns what the forward pass should continue with (null:
    /// the output unchanged). Without gradients a detached clone is kept, so in-place ops downstream cannot change it.
    /// With gradients the kept tensor must be a leaf of the graph a score is differentiated against: the output itself
    /// when something upstream already requires grad (the model continues on a clone), else a detached copy that
    /// requires grad (the model continues on a clone of it, so the backward pass stops at the layer). Integer values
    /// (e.g. ArgMax labels) have no gradient and are kept as detached clones.</summary>
    public Tensor? Keep(string layer, Tensor output, bool forGradients)
    {
        Tensor kept; Tensor? replacement;
        if (!forGradients || !output.is_floating_point()) { kept = output.detach().clone(); replacement = null; }
        else if (output.requires_grad) { kept = output; replacement = output.clone(); }
        else { kept = output.detach().requires_grad_(true); replacement = kept.clone(); }
        Put(layer, kept);
        return replacement;
    }

    /// <summary>Stores <paramref name="kept"/> as the layer's capture (taking ownership: it leaves its dispose scope).</summary>
    public void Put(string layer, Tensor kept)
    {
        kept.DetachFromDisposeScope();
        lock (_gate)
        {
            if (_captured.Remove(layer, out var old) && !ReferenceEquals(old, kept)) old.Dispose();
            _captured[layer] = kept;
        }
    }

    /// <summary>The layer's last capture; a clear error when the layer did not run.</summary>
    public Tensor this[string layer] => TryGet(layer, out var t) ? t : throw new LoupeException($"layer '{layer}' produced no output in the last forward pass");

    /// <summary>The layer's last capture, when there is one.</summary>
    public bool TryGet(string layer, out Tensor activation)
    {
        lock (_gate) return _captured.TryGetValue(layer, out activation!);
    }

    /// <summary>Disposes every capture.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var t in _captured.Values) t.Dispose();
            _captured.Clear();
        }
    }
}
