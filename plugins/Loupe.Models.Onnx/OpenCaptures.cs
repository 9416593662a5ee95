using Loupe.Abstractions;

namespace Loupe.Models.Onnx;

/// <summary>The layer captures a model has open, shared by both ONNX backends: layer names resolved to graph values,
/// captures kept (under the model's lock) so that disposing the model closes them, and dropped when they close.</summary>
sealed class OpenCaptures<T>(object gate) where T : class, IDisposable
{
    readonly List<T> _open = [];

    /// <summary>Each distinct layer with the graph value it names; unknown layers are refused together.</summary>
    public static List<(string Layer, string Value)> Resolve(IReadOnlyCollection<string> layers, IReadOnlyDictionary<string, string> layerToValue)
    {
        var missing = layers.Where(l => !layerToValue.ContainsKey(l)).ToList();
        if (missing.Count > 0) throw new LoupeException($"unknown layer(s): {string.Join(", ", missing)}");
        return layers.Distinct().Select(l => (l, layerToValue[l])).ToList();
    }

    /// <summary>Keeps <paramref name="capture"/> open; returns it.</summary>
    public T Add(T capture)
    {
        lock (gate) _open.Add(capture);
        return capture;
    }

    /// <summary>Forgets a capture that closed itself.</summary>
    public void Remove(T capture) { lock (gate) _open.Remove(capture); }

    /// <summary>The open captures now (a forward pass works on this copy).</summary>
    public T[] ToArray() { lock (gate) return _open.ToArray(); }

    /// <summary>Closes every open capture (the model is being disposed).</summary>
    public void CloseAll() { foreach (var c in ToArray()) c.Dispose(); }
}
