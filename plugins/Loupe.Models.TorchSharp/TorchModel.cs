using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>How a TorchSharp model lays out image batches in memory.</summary>
public enum MemoryLayout
{
    /// <summary>Channels-last for batches of 2 or more images with more than one channel (measured on resnet18 224²,
    /// 2 threads: batch 8 forward −27 %, forward+backward −13 %; batch 1 is faster in NCHW), and for single images too
    /// on the architectures measured faster so (<see cref="TorchModel.ChannelsLastAtBatchOne"/>).</summary>
    Auto,
    /// <summary>Always channels-last (NHWC strides) for multi-channel 4-D inputs.</summary>
    Always,
    /// <summary>Always NCHW (the input as given).</summary>
    Never,
}

/// <summary>An <see cref="IModel"/> over a TorchSharp module: eval mode, frozen parameters, hook-based capture.</summary>
public sealed partial class TorchModel : IModel, IModelInterventions, IModelGraphSource, IModelParameterReader
{
    readonly nn.Module<Tensor, Tensor> _module;
    readonly Dictionary<string, nn.Module> _modules;
    readonly Dictionary<string, Tensor> _parameters;

    readonly Rewrites? _rewrites;

    /// <summary>Wraps <paramref name="module"/> (takes ownership). With <paramref name="foldBatchNorm"/>, batch norms
    /// of TorchVision ResNets, VGG-BN sequences and the demo CNN are folded into their convolutions; with
    /// <paramref name="fastKernels"/>, max pools and the input gradients of first-layer convolutions run on faster
    /// kernels (see <see cref="Rewrites"/>). The rewrites are checked on one input and dropped if the outputs differ.</summary>
    public TorchModel(nn.Module<Tensor, Tensor> module, InputSpec input, IReadOnlyList<string>? labels, bool foldBatchNorm = false, bool fastKernels = false)
    {
        Loupe.Abstractions.Toolkit.TorchNative.Configure();   // before the module's first convolution
        _module = module;
        _module.eval();
        foreach (var p in _module.parameters()) p.requires_grad = false;
        _modules = _module.named_modules().Where(m => m.name.Length > 0).ToDictionary(m => m.name, m => m.module);
        _parameters = _module.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        foreach (var (name, buffer) in _module.named_buffers()) _parameters.TryAdd(name, buffer);
        DefaultInput = input;
        DefaultLabels = labels;
        Layers = _modules.Select(kv => new LayerInfo(kv.Key, kv.Value.GetType().Name) { Geometry = GeometryOf(kv.Value), IsModule = true }).ToList();
        if (foldBatchNorm || fastKernels) _rewrites = CheckedRewrite(_module, input, foldBatchNorm, fastKernels);
    }

    /// <summary>Number of batch norms folded into convolutions (0 when folding is off or found nothing).</summary>
    public int FoldedBatchNorms => _rewrites?.FoldedBatchNorms ?? 0;

    /// <summary>Number of max pools that run on the faster kernel.</summary>
    public int FastMaxPools => _rewrites?.FastMaxPools ?? 0;

    /// <summary>Number of unfolded first-layer convolutions with the faster input gradient (a folded one has it too).</summary>
    public int FewChannelConvs => _rewrites?.FewChannelConvs ?? 0;

    /// <summary>Number of unfolded convolutions that run on the direct kernel where oneDNN is off (a folded one runs
    /// there too when it can).</summary>
    public int DirectConvs => _rewrites?.DirectConvs ?? 0;

    /// <summary>Grouped convolutions running on <see cref="Loupe.Abstractions.Toolkit.GroupedConvolution"/> (outside folds).</summary>
    public int GroupedConvs => _rewrites?.GroupedConvs ?? 0;

    /// <summary>Rewrites, then compares the rewritten and the original model on one seeded input: a relative difference
    /// above 1e-3 of the largest output means a pair was not the chain it looked like, and the rewrites are undone.</summary>
    static Rewrites? CheckedRewrite(nn.Module<Tensor, Tensor> module, InputSpec input, bool foldBatchNorm, bool fastKernels)
    {
        var rewrites = Rewrites.Apply(module, foldBatchNorm, fastKernels);
        if (rewrites.Count == 0) { rewrites.Dispose(); return null; }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn([1, input.Channels, input.Height, input.Width], generator: new Generator(0));
        var folded = module.call(x);
        var original = rewrites.Undone(() => module.call(x));
        var tolerance = 1e-3 * (original.abs().max().item<float>() + 1e-6);
        if ((folded - original).abs().max().item<float>() <= tolerance) return rewrites;
        rewrites.Dispose();
        return null;
    }

    /// <summary>The wrapped module. Reading it undoes the rewrites (folded batch norms, fast pools) for good: the caller
    /// may change weights or the module tree.</summary>
    public nn.Module<Tensor, Tensor> Module
    {
        get
        {
            _rewrites?.Dispose();
            return _module;
        }
    }
    /// <inheritdoc/>
    public ModelCapabilities Capabilities => ModelCapabilities.Forward | ModelCapabilities.LayerActivations | ModelCapabilities.Gradients
        | ModelCapabilities.Parameters | ModelCapabilities.Interventions | ModelCapabilities.ReluOverride | ModelCapabilities.Graph;
    /// <inheritdoc/>
    public ModelGraph Graph() => GraphExport.Export(_module);
    /// <inheritdoc/>
    public InputSpec DefaultInput { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string>? DefaultLabels { get; }
    /// <inheritdoc/>
    public IReadOnlyList<LayerInfo> Layers { get; }
    /// <inheritdoc/>
    public IReadOnlyList<string> ParameterNames => _parameters.Keys.ToList();
    /// <inheritdoc/>
    public Tensor? GetParameter(string name)
    {
        _rewrites?.Release(name); // the caller may change it: that pair runs unfolded from now on
        return _parameters.GetValueOrDefault(name);
    }
    /// <inheritdoc/>
    public Tensor? ReadParameter(string name) => _parameters.GetValueOrDefault(name);   // no release: the pair stays folded
    /// <summary>Memory layout of 4-D inputs (see <see cref="MemoryLayout"/>).</summary>
    public MemoryLayout Layout { get; init; } = MemoryLayout.Auto;
    /// <summary>Under <see cref="MemoryLayout.Auto"/>, channels-last for a batch of one too (the backend sets it for the
    /// architectures whose single-image passes are faster so).</summary>
    public bool ChannelsLastAtBatchOne { get; init; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        if (!UseChannelsLast(input)) return _module.call(input);
        using var scope = NewDisposeScope();
        return scope.MoveToOuter(_module.call(ChannelsLast(input)));
    }

    /// <summary>NHWC strides for this batch: by <see cref="Layout"/>, and never where oneDNN's convolutions are off
    /// (<see cref="Loupe.Abstractions.Toolkit.TorchNative"/>: ATen's own kernels gain nothing channels-last, and their
    /// dilated convolutions' input gradients came out 17 % off there, FCN's saliency in SegmentationTests).</summary>
    bool UseChannelsLast(Tensor x) =>
        x.dim() == 4 && x.shape[1] > 1 && !Loupe.Abstractions.Toolkit.TorchNative.Configure() && Layout switch
        {
            MemoryLayout.Always => true,
            MemoryLayout.Never => false,
            _ => x.shape[0] >= 2 || ChannelsLastAtBatchOne,
        };

    /// <summary>The same values with NHWC strides (N×C×H×W shape). TorchSharp 0.107 has no <c>memory_format</c>
    /// argument, so this is <c>permute → contiguous → permute back</c>, which is what
    /// <c>contiguous(memory_format=torch.channels_last)</c> does; libtorch's convolutions, batch norms and pools then
    /// keep that layout layer after layer. Differentiable: gradients come back in the input's layout.</summary>
    public static Tensor ChannelsLast(Tensor x) => x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);

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
        var names = layers.Distinct().ToList();
        var pins = Pins(names);
        try { return new HookCapture(names.Select(l => (l, Running(_modules[l]))).ToList(), forGradients, pins, inputs: false); }
        catch { foreach (var p in pins) p.Dispose(); throw; }
    }

    /// <inheritdoc/>
    public IDisposable Intervene(string layer, Func<Tensor, Tensor> transform)
    {
        var module = _modules.TryGetValue(layer, out var m) ? m : throw new LoupeException($"unknown layer '{layer}'");
        var pins = Pins([layer]);
        var hooks = Running(module).Select(r => Interventions.Intervene(r, layer, transform));
        return new Interventions.Handle([.. hooks.Concat(pins).Select(h => (Action)h.Dispose)]);
    }

    /// <inheritdoc/>
    public IDisposable OverrideRelu(ReluRule rule) => OverrideRelu(rule, 10);

    /// <inheritdoc/>
    public IDisposable OverrideRelu(ReluRule rule, double beta)
    {
        // One rule at a time (a wrapper around a method that sets its own would chain two rules' hooks).
        if (Interlocked.Exchange(ref _reluOverride, 1) == 1) throw new LoupeException("a ReLU override is already active on this model");
        try
        {
            var handle = Interventions.OverrideRelu(_modules, rule, m => Running(m), beta);
            return new Interventions.Handle([handle.Dispose, () => Volatile.Write(ref _reluOverride, 0)]);
        }
        catch
        {
            Volatile.Write(ref _reluOverride, 0);
            throw;
        }
    }

    int _reluOverride;

    /// <summary>The modules that may run for <paramref name="module"/>: itself, and what runs in its place while folded.</summary>
    IReadOnlyList<nn.Module> Running(nn.Module module) =>
        _rewrites?.RunsFor(module) is { } other ? [module, other] : [module];

    /// <summary>Unfolds the folded convolutions among <paramref name="layers"/> for as long as the handles live.</summary>
    List<IDisposable> Pins(IEnumerable<string> layers) =>
        _rewrites is null ? [] : layers.Select(_rewrites.Pin).OfType<IDisposable>().ToList();

    /// <inheritdoc/>
    public void Dispose()
    {
        _rewrites?.Dispose();
        _module.Dispose();
    }

    /// <summary>Forward hooks that keep each layer's output. TorchSharp has no module backward hooks, so for
    /// gradients the output is replaced by a leaf that requires grad (when nothing upstream does): the
    /// backward pass then stops at the layer instead of running down to the input.</summary>
    sealed class HookCapture : ILayerCapture
    {
        readonly CaptureSlots _slots = new();
        readonly List<Action> _hooks = new();
        readonly List<IDisposable> _pins;

        public HookCapture(List<(string Name, IReadOnlyList<nn.Module> Modules)> layers, bool forGradients, List<IDisposable> pins, bool inputs)
        {
            _pins = pins;
            try
            {
                foreach (var (name, modules) in layers)
                {
                    foreach (var module in modules)
                    {
                        if (module is not nn.Module<Tensor, Tensor> m)
                            throw new LoupeException($"layer '{name}' ({module.GetType().Name}) does not map one tensor to one tensor and cannot be captured");
                        if (inputs)
                        {
                            // Forward pre-hook: the module reads the replacement (or its own input when none).
                            var pre = m.register_forward_pre_hook((_, input) => _slots.Keep(name, input, forGradients)!);
                            _hooks.Add(() => pre.remove());
                            continue;
                        }
                        var hook = m.register_forward_hook((_, _, output) => _slots.Keep(name, output, forGradients)!);
                        _hooks.Add(() => hook.remove());
                    }
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public Tensor this[string layer] => _slots[layer];

        public bool TryGet(string layer, out Tensor activation) => _slots.TryGet(layer, out activation);

        public void Dispose()
        {
            foreach (var remove in _hooks) remove();
            _hooks.Clear();
            foreach (var p in _pins) p.Dispose();
            _pins.Clear();
            _slots.Dispose();
        }
    }
}
