using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>An <see cref="IModel"/> over a TorchSharp module: eval mode, frozen parameters, hook-based capture.</summary>
public sealed class TorchModel : IModel, IModelInterventions
{
    readonly nn.Module<Tensor, Tensor> _module;
    readonly Dictionary<string, nn.Module> _modules;
    readonly Dictionary<string, Tensor> _parameters;

    /// <summary>Wraps <paramref name="module"/> (takes ownership).</summary>
    public TorchModel(nn.Module<Tensor, Tensor> module, InputSpec input, IReadOnlyList<string>? labels)
    {
        _module = module;
        _module.eval();
        foreach (var p in _module.parameters()) p.requires_grad = false;
        _modules = _module.named_modules().Where(m => m.name.Length > 0).ToDictionary(m => m.name, m => m.module);
        _parameters = _module.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        foreach (var (name, buffer) in _module.named_buffers()) _parameters.TryAdd(name, buffer);
        DefaultInput = input;
        DefaultLabels = labels;
        Layers = _modules.Select(kv => new LayerInfo(kv.Key, kv.Value.GetType().Name) { Geometry = GeometryOf(kv.Value) }).ToList();
    }

    /// <summary>The wrapped module.</summary>
    public nn.Module<Tensor, Tensor> Module => _module;
    /// <inheritdoc/>
    public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients
        | ModelCapabilities.Parameters | ModelCapabilities.Interventions | ModelCapabilities.ReluOverride;
    /// <inheritdoc/>
    public InputSpec DefaultInput { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string>? DefaultLabels { get; }
    /// <inheritdoc/>
    public IReadOnlyList<LayerInfo> Layers { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> ParameterNames => _parameters.Keys.ToList();
    /// <inheritdoc/>
    public Tensor? GetParameter(string name) => _parameters.GetValueOrDefault(name);
    /// <inheritdoc/>
    public Tensor Forward(Tensor input) => _module.call(input);

    static LayerGeometry? GeometryOf(nn.Module m) => m switch
    {
        Conv2d c => new LayerGeometry([(int)c.kernel_size[0], (int)c.kernel_size[1]], [(int)c.stride[0], (int)c.stride[1]],
            [(int)c.padding![0], (int)c.padding![1]], [(int)c.dilation[0], (int)c.dilation[1]]),
        _ => null,
    };

    /// <inheritdoc/>
    public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients)
    {
        var missing = layers.Where(l => !_modules.ContainsKey(l)).ToList();
        if (missing.Count > 0) throw new LoupeException($"unknown layer(s): {string.Join(", ", missing)}");
        return new HookCapture(layers.Distinct().Select(l => (l, _modules[l])).ToList(), forGradients);
    }

    /// <inheritdoc/>
    public IDisposable Intervene(string layer, Func<Tensor, Tensor> transform) =>
        Interventions.Intervene(_modules.TryGetValue(layer, out var m) ? m : throw new LoupeException($"unknown layer '{layer}'"), layer, transform);

    /// <inheritdoc/>
    public IDisposable OverrideRelu(ReluRule rule) => Interventions.OverrideRelu(_modules, rule);

    /// <inheritdoc/>
    public void Dispose() => _module.Dispose();

    /// <summary>Forward hooks that keep each layer's output. TorchSharp has no module backward hooks, so for
    /// gradients the output is replaced by a leaf that requires grad (when nothing upstream does): the
    /// backward pass then stops at the layer instead of running down to the input.</summary>
    sealed class HookCapture : ILayerCapture
    {
        readonly Dictionary<string, Tensor> _captured = new();
        readonly List<Action> _hooks = new();
        readonly object _gate = new();

        public HookCapture(List<(string Name, nn.Module Module)> layers, bool forGradients)
        {
            try
            {
                foreach (var (name, module) in layers)
                {
                    if (module is not nn.Module<Tensor, Tensor> m)
                        throw new LoupeException($"layer '{name}' ({module.GetType().Name}) does not map one tensor to one tensor and cannot be captured");
                    var hook = m.register_forward_hook((_, _, output) => OnForward(name, output, forGradients));
                    _hooks.Add(() => hook.remove());
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        Tensor? OnForward(string name, Tensor output, bool forGradients)
        {
            Tensor kept; Tensor? replacement;
            if (!forGradients) { kept = output.detach().clone(); replacement = null; }
            else if (output.requires_grad) { kept = output; replacement = output.clone(); }
            else { kept = output.detach().requires_grad_(true); replacement = kept.clone(); }
            kept.DetachFromDisposeScope();
            lock (_gate)
            {
                if (_captured.Remove(name, out var old) && !ReferenceEquals(old, kept)) old.Dispose();
                _captured[name] = kept;
            }
            return replacement;
        }

        public Tensor this[string layer] => TryGet(layer, out var t) ? t : throw new LoupeException($"layer '{layer}' produced no output in the last forward pass");

        public bool TryGet(string layer, out Tensor activation)
        {
            lock (_gate) return _captured.TryGetValue(layer, out activation!);
        }

        public void Dispose()
        {
            foreach (var remove in _hooks) remove();
            _hooks.Clear();
            lock (_gate)
            {
                foreach (var t in _captured.Values) t.Dispose();
                _captured.Clear();
            }
        }
    }
}
