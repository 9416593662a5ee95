using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Layer inputs (Captum's <c>attribute_to_layer_input=True</c>): the input of a layer is the first non-constant
/// value read by the node that produces the layer's value (a Conv's data input, a Relu's pre-activation; the graph input
/// for the first node). Captures and interventions then work on that value exactly as on a node output, so every
/// node that reads it sees the replacement (a gradient there is the total over its readers, as Captum's gradient with
/// respect to the input tensor).</summary>
public sealed partial class OnnxModel : ILayerInputs
{
    /// <summary>The value name read as <paramref name="layer"/>'s input.</summary>
    string InputValueOf(string layer)
    {
        if (!_layerToValue.TryGetValue(layer, out var value)) throw new LoupeException($"unknown layer: {layer}");
        var node = _plan.FirstOrDefault(n => n.Outputs.Contains(value))
            ?? throw new LoupeException($"{_source}: layer '{layer}' is not produced by a node that runs per forward");
        return node.Inputs.FirstOrDefault(i => i.Length > 0 && !_constants.ContainsKey(i))
            ?? throw new LoupeException($"{_source}: node '{node.Name}' ({node.OpType}) producing layer '{layer}' reads only constants: it has no input to attribute to");
    }

    /// <inheritdoc/>
    public ILayerCapture CaptureInputs(IReadOnlyCollection<string> layers, bool forGradients)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var capture = new LayerCapture(this, layers.Distinct().Select(l => (l, InputValueOf(l))).ToList(), forGradients);
        lock (_gate) _captures.Add(capture);
        return capture;
    }

    /// <inheritdoc/>
    public IDisposable InterveneInput(string layer, Func<Tensor, Tensor> transform)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var iv = new Intervention(InputValueOf(layer), transform);
        lock (_gate) _interventions.Add(iv);
        return new Undo(() => { lock (_gate) _interventions.Remove(iv); });
    }
}

/// <summary>Side inputs (every graph input but the image; <see cref="IModelSideInputs"/>): their values enter the
/// interpreter's environment like the image, so gradients, captures and interventions reach them.</summary>
public sealed partial class OnnxModel : IModelSideInputs
{
    /// <inheritdoc/>
    public IReadOnlyList<ModelInput> Inputs => _side.Inputs;
    /// <inheritdoc/>
    public IReadOnlyDictionary<string, Tensor> Read(IReadOnlyList<string> ids) => _side.Read(ids);
    /// <inheritdoc/>
    public IReadOnlyDictionary<string, Tensor> Active => _side.Active;
    /// <inheritdoc/>
    public IDisposable Use(IReadOnlyDictionary<string, Tensor> values) => _side.Use(values);
}
