using Loupe.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Layer inputs (Captum's <c>attribute_to_layer_input=True</c>) through forward pre-hooks: the input a module
/// receives is captured (as a leaf that requires grad, for gradients) or replaced, with the same rules as the output
/// hooks. A folded batch norm's input exists only unfolded, so its pair is unfolded while the hook lives.</summary>
public sealed partial class TorchModel : ILayerInputs
{
    /// <inheritdoc/>
    public ILayerCapture CaptureInputs(IReadOnlyCollection<string> layers, bool forGradients)
    {
        var missing = layers.Where(l => !_modules.ContainsKey(l)).ToList();
        if (missing.Count > 0) throw new LoupeException($"unknown layer(s): {string.Join(", ", missing)}");
        var names = layers.Distinct().ToList();
        var pins = InputPins(names);
        try { return new HookCapture(names.Select(l => (l, Running(_modules[l]))).ToList(), forGradients, pins, inputs: true); }
        catch { foreach (var p in pins) p.Dispose(); throw; }
    }

    /// <inheritdoc/>
    public IDisposable InterveneInput(string layer, Func<Tensor, Tensor> transform)
    {
        var module = _modules.TryGetValue(layer, out var m) ? m : throw new LoupeException($"unknown layer '{layer}'");
        var pins = InputPins([layer]);
        var removers = new List<Action>();
        foreach (var r in Running(module))
        {
            if (r is not nn.Module<Tensor, Tensor> mm)
                throw new LoupeException($"layer '{layer}' ({r.GetType().Name}) does not map one tensor to one tensor");
            var h = mm.register_forward_pre_hook((_, input) => transform(input));
            removers.Add(() => h.remove());
        }
        return new Interventions.Handle([.. removers, .. pins.Select(p => (Action)p.Dispose)]);
    }

    /// <summary>Unfolds what a hook on these layers' inputs needs: a folded batch norm's pair (its input exists only
    /// unfolded) and a folded convolution's (the fused module that runs in its place carries no hooks; until 2026-12-05
    /// the input of a folded convolution was never captured).</summary>
    List<IDisposable> InputPins(IEnumerable<string> layers) =>
        _rewrites is null ? [] : layers.SelectMany(l => new[] { _rewrites.PinInput(l), _rewrites.Pin(l) }).OfType<IDisposable>().ToList();
}
