using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Interventions on the interpreter, as the TorchSharp backend's hooks: a node output replaced on every forward
/// (Ablation-CAM) and every <c>Relu</c> node back-propagating with another rule (guided backprop, DeconvNet, Guided
/// Grad-CAM) or DeepLift's rescale rule (Relu, Sigmoid, Tanh, Softmax and MaxPool nodes). The interpreter runs each node itself, so no hook is needed: it applies them as it goes.</summary>
public sealed partial class OnnxModel : IModelInterventions
{
    readonly record struct Intervention(string Value, Func<Tensor, Tensor> Transform);

    readonly List<Intervention> _interventions = new();
    ReluRule? _reluRule;
    double _reluBeta = 10;

    /// <inheritdoc/>
    public IDisposable Intervene(string layer, Func<Tensor, Tensor> transform)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_layerToValue.TryGetValue(layer, out var value)) throw new LoupeException($"unknown layer: {layer}");
        var iv = new Intervention(value, transform);
        lock (_gate) _interventions.Add(iv);
        return new Undo(() => { lock (_gate) _interventions.Remove(iv); });
    }

    /// <inheritdoc/>
    public IDisposable OverrideRelu(ReluRule rule) => OverrideRelu(rule, 10);

    /// <inheritdoc/>
    public IDisposable OverrideRelu(ReluRule rule, double beta)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (rule == ReluRule.BetaSmooth && !_plan.Any(n => n.OpType == "Relu"))
            throw new LoupeException("β-smooth changes the backward pass of Relu nodes, and this graph has none (its activations are of another kind): the map would be the plain gradient's");
        lock (_gate)
        {
            if (_reluRule is not null) throw new LoupeException("a ReLU override is already active on this model");
            _reluRule = rule;
            _reluBeta = beta;
        }
        return new Undo(() => { lock (_gate) _reluRule = null; });
    }

    /// <summary>A Relu node's output under <paramref name="rule"/>: guided backprop keeps the plain ReLU (whose backward
    /// masks by input &gt; 0) followed by the positive-gradient identity; DeconvNet recomputes relu(x) with a relu(gradient)
    /// backward. The forward values are unchanged.</summary>
    /// <summary>A node's output under the rescale rule (<see cref="Ops.Rescaled"/>), errors named as the interpreter names them.</summary>
    static Tensor? Rescaled(OnnxNode n, Tensor?[] inputs)
    {
        try { return Ops.Rescaled(n, inputs); }
        catch (LoupeException) { throw; }
        catch (Exception e) when (e is not OutOfMemoryException) { throw n.Error($"rescale rule failed: {e.Message.Split('\n')[0]}"); }
    }

    static Tensor OverriddenRelu(ReluRule rule, double beta, Tensor input, Tensor output) => rule switch
    {
        ReluRule.Guided => PositiveGradient.apply(output),
        ReluRule.BetaSmooth => BetaSmoothRelu.apply(input, beta),
        _ => DeconvRelu.apply(input),
    };

    sealed class Undo(Action undo) : IDisposable
    {
        Action? _undo = undo;
        public void Dispose() => Interlocked.Exchange(ref _undo, null)?.Invoke();
    }
}
