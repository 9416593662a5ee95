using System.Reflection;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>What runs in place of some of a model's modules, for speed, with the same results: batch norms folded
/// into the convolution before them, max pools on a faster kernel (<see cref="FastMaxPool"/>), and first-layer
/// convolutions with a faster input gradient (<see cref="FewChannelConv"/>).
/// <para><b>Batch norms.</b> Eval-mode batch norms folded into the convolution before them: <c>bn(conv(x)) = conv'(x)</c>
/// with <c>w' = w·γ/√(σ²+ε)</c> and <c>b' = β + (b − μ)·γ/√(σ²+ε)</c> — the fold that ONNX exporters and
/// <c>torch.fx</c>'s fuser make. The batch norm's pass over every activation (and its backward) disappears: resnet18 at
/// 224² runs its forward ~5 % and its forward+backward 3–5 % faster, the demo CNN's forward+backward ~20 %; outputs
/// agree to float rounding (~1e-6 relative). Only pairs whose data flow is known are folded: adjacent
/// <c>Conv2d → BatchNorm2d</c> in a <see cref="Sequential"/> held in a field of its parent, and the <c>convK</c>/<c>bnK</c>
/// fields of TorchVision's ResNet blocks and of the demo CNN, where <c>convK</c> feeds <c>bnK</c> and nothing else.</para>
/// <para><b>Fast kernels.</b> Any <see cref="MaxPool2d"/> held in a field typed as a module, or in a Sequential, runs as a
/// <see cref="FastMaxPool"/>: the same values, indices and gradients; so does any <see cref="Conv2d"/> with at most 4
/// input channels as a <see cref="FewChannelConv"/> (a folded one gets the same path inside its fused convolution), and,
/// where <see cref="DirectConvolution"/> is enabled, any one it can run (strides up to 4; a folded one inside its fused
/// convolution, and on a <see cref="FewChannelConv"/> while pinned or released).</para>
/// <para>The rewrites change what runs, never the module tree: parents' fields point at the replacement (a fused
/// convolution, an identity placeholder for the batch norm, a fast pool), and a <see cref="Sequential"/> is replaced by
/// a copy whose items are swapped (a Sequential lists its own names and parameters from its items, so it is never
/// edited). Names, parameters and the state dict stay the model's own. Hooks on a replaced module also go on what runs
/// in its place (<see cref="RunsFor"/>); a hook on a folded convolution needs the convolution's own output, so
/// <see cref="Pin"/> unfolds the pair while the hook lives.</para></summary>
sealed class Rewrites : IDisposable
{
    /// <summary>Parent types whose <c>convK → bnK</c> fields are a chain in their forward.</summary>
    static readonly HashSet<string> KnownBlocks = ["ResNet", "BasicBlock", "Bottleneck", "FashionCnn"];
    const BindingFlags Instance = BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public;

    enum Kind { Fold, Pool, Conv, Direct, Grouped }

    /// <summary>One replacement: applied while not pinned; owns what it put in place. A pinned fold runs its convolution
    /// on the fast kernel when there is one (<see cref="Unfold"/>); undone for good, the original modules.</summary>
    sealed class Swap(Action apply, Action undo, Kind kind, params IDisposable[] owned)
    {
        public readonly Kind Kind = kind;
        public readonly IDisposable[] Owned = owned;
        public int Pins;
        public Action? Unfold { get; init; }

        public void Apply() => apply();
        public void Undo() => undo();
        public void Pin() => (Unfold ?? undo)();
    }

    readonly List<Swap> _swaps = [];
    readonly Dictionary<string, Swap> _byConv = [];
    readonly Dictionary<string, Swap> _byParameter = [];
    readonly Dictionary<string, Swap> _byBn = [];
    readonly Dictionary<nn.Module, nn.Module> _runsFor = new(ReferenceEqualityComparer.Instance);
    readonly List<Action> _restoreFields = [];
    readonly List<SequentialCopy> _copies = [];
    readonly HashSet<nn.Module> _paired = new(ReferenceEqualityComparer.Instance);
    readonly object _gate = new();

    Rewrites() { }

    /// <summary>Number of batch norms folded now (pinned and released pairs run unfolded).</summary>
    public int FoldedBatchNorms => _swaps.Count(p => p.Kind == Kind.Fold && p.Pins == 0);

    /// <summary>Number of max pools that run as <see cref="FastMaxPool"/>.</summary>
    public int FastMaxPools => _swaps.Count(p => p.Kind == Kind.Pool);

    /// <summary>Number of unfolded first-layer convolutions that run as <see cref="FewChannelConv"/>.</summary>
    public int FewChannelConvs => _swaps.Count(p => p.Kind == Kind.Conv);

    /// <summary>Number of unfolded convolutions that run on <see cref="DirectConvolution"/> (where it is enabled).</summary>
    public int DirectConvs => _swaps.Count(p => p.Kind == Kind.Direct);

    /// <summary>Grouped convolutions swapped for <see cref="GroupedConvolution"/>'s kernel (outside folds).</summary>
    public int GroupedConvs => _swaps.Count(p => p.Kind == Kind.Grouped);

    /// <summary>Number of rewrites in place.</summary>
    public int Count => _swaps.Count(p => p.Pins == 0);

    /// <summary>Finds what can be rewritten in <paramref name="root"/> (which must be in eval mode) and rewrites it.</summary>
    public static Rewrites Apply(nn.Module root, bool foldBatchNorm, bool fastKernels)
    {
        var rewrites = new Rewrites();
        using (no_grad())
        {
            // TorchSharp's named_modules() leaves out the root itself.
            foreach (var (name, module) in root.named_modules().Where(m => m.name.Length > 0).Prepend(("", root)))
            {
                if (module is Sequential) continue;
                var prefix = name.Length == 0 ? "" : name + ".";
                var fields = module.GetType().GetFields(Instance)
                    .Where(f => f.FieldType.IsAssignableFrom(typeof(Identity)) && f.FieldType.IsAssignableFrom(typeof(FusedConv))
                        && f.FieldType.IsAssignableFrom(typeof(SequentialCopy)) && f.FieldType.IsAssignableFrom(typeof(FastMaxPool))
                        && f.FieldType.IsAssignableFrom(typeof(FewChannelConv)))
                    .ToDictionary(f => f.Name);
                // The registered children must be the very objects in the fields: the names users see are the registry's.
                var children = module.named_children().ToDictionary(c => c.name, c => c.module);
                bool Registered(string field, object? value) => value is not null && ReferenceEquals(children.GetValueOrDefault(field), value);
                if (foldBatchNorm && KnownBlocks.Contains(module.GetType().Name)) rewrites.FromFields(module, prefix, fields, Registered, fastKernels);
                foreach (var (fieldName, field) in fields)
                {
                    var value = field.GetValue(module);
                    if (!Registered(fieldName, value)) continue;
                    if (value is Sequential seq && rewrites.FromSequential(seq, prefix + fieldName + ".", foldBatchNorm, fastKernels) is { } copy)
                    {
                        field.SetValue(module, copy);
                        rewrites._restoreFields.Add(() => field.SetValue(module, seq));
                    }
                    else if (fastKernels) rewrites.AddFast((nn.Module)value!, m => field.SetValue(module, m));
                }
            }
        }
        foreach (var p in rewrites._swaps) p.Apply();
        return rewrites;
    }

    void FromFields(nn.Module parent, string prefix, Dictionary<string, FieldInfo> fields, Func<string, object?, bool> registered, bool fastKernels)
    {
        foreach (var (name, field) in fields)
        {
            if (!name.StartsWith("bn", StringComparison.Ordinal) || field.GetValue(parent) is not BatchNorm2d bn || !registered(name, bn)) continue;
            var convName = "conv" + name[2..];
            if (!fields.TryGetValue(convName, out var convField) || convField.GetValue(parent) is not Conv2d conv || !registered(convName, conv)) continue;
            Add(prefix + convName, prefix + name, conv, bn, m => convField.SetValue(parent, m), m => field.SetValue(parent, m), fastKernels);
        }
    }

    /// <summary>What runs in place of <paramref name="seq"/> (null: itself): a copy with its conv → batch-norm pairs
    /// folded and its fast kernels swapped in, and each Sequential item (torchvision's Conv2dNormActivation inside
    /// EfficientNet's, MobileNet's and RegNet's blocks) rewritten the same way.</summary>
    SequentialCopy? FromSequential(Sequential seq, string prefix, bool foldBatchNorm, bool fastKernels)
    {
        var items = seq.named_children().ToList();
        if (items.Count == 0) return null;   // an empty Sequential (ShuffleNet v2's stride-1 branch1): nothing runs in it
        if (items.Any(i => i.module is not nn.Module<Tensor, Tensor>)) return null;
        var nested = items.Select(i => i.module is Sequential inner ? FromSequential(inner, prefix + i.name + ".", foldBatchNorm, fastKernels) : null).ToList();
        bool folds = foldBatchNorm && Enumerable.Range(0, items.Count - 1).Any(i => items[i].module is Conv2d && items[i + 1].module is BatchNorm2d);
        bool fast = fastKernels && items.Any(i => HasFastKernel(i.module));
        if (!folds && !fast && nested.All(n => n is null)) return null;
        var copy = new SequentialCopy([.. items.Select((i, k) => nested[k] ?? (nn.Module<Tensor, Tensor>)i.module)]);
        for (int i = 0; i < items.Count; i++)
        {
            int ci = i, bi = i + 1;
            if (folds && bi < items.Count && items[ci].module is Conv2d conv && items[bi].module is BatchNorm2d bn)
                Add(prefix + items[ci].name, prefix + items[bi].name, conv, bn, m => copy.Items[ci] = m, m => copy.Items[bi] = m, fastKernels);
        }
        if (fast)
            for (int i = 0; i < items.Count; i++)
            {
                int ci = i;
                AddFast(items[ci].module, m => copy.Items[ci] = m);
            }
        _runsFor[seq] = copy;
        _copies.Add(copy);
        return copy;
    }

    void Add(string convName, string bnName, Conv2d conv, BatchNorm2d bn, Action<nn.Module<Tensor, Tensor>> setConv, Action<nn.Module<Tensor, Tensor>> setBn, bool fastKernels)
    {
        if (bn.running_mean is null || bn.running_var is null || conv.padding_mode != PaddingModes.Zeros || conv.padding is null) return;
        using var scope = NewDisposeScope();
        // An explicit Scalar held to the end of the method: an implicit one can be finalised while libtorch reads it
        // (seen once in CI as "Expected false to be true" from Scalar::toDouble inside add).
        using var eps = bn.eps.ToScalar();
        var scale = (bn.weight ?? ones_like(bn.running_var)) / (bn.running_var + eps).sqrt();
        var weight = (conv.weight! * scale.view(-1, 1, 1, 1)).contiguous();
        var bias = (bn.bias ?? zeros_like(bn.running_mean)) + ((conv.bias ?? zeros_like(bn.running_mean)) - bn.running_mean) * scale;
        weight.DetachFromDisposeScope();
        bias.DetachFromDisposeScope();
        var fused = new FusedConv(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups);
        var placeholder = nn.Identity();
        // Unfolded (pinned, or released because its weights may change), the convolution runs on its fast kernel if it has
        // one; hooks on it go on that kernel too.
        var unfolded = fastKernels ? FastKernel(conv)?.Fast : null;
        var pair = unfolded is null
            ? new Swap(() => { setConv(fused); setBn(placeholder); }, () => { setConv(conv); setBn(bn); }, Kind.Fold, fused, placeholder)
            : new Swap(() => { setConv(fused); setBn(placeholder); }, () => { setConv(conv); setBn(bn); }, Kind.Fold, fused, placeholder, unfolded)
            { Unfold = () => { setConv(unfolded); setBn(bn); } };
        if (unfolded is not null) _runsFor[conv] = unfolded;
        _swaps.Add(pair);
        _paired.Add(conv);
        _byConv[convName] = pair;
        _byBn[bnName] = pair;
        _runsFor[bn] = placeholder;
        foreach (var (p, _) in conv.named_parameters()) _byParameter[convName + "." + p] = pair;
        foreach (var (p, _) in bn.named_parameters()) _byParameter[bnName + "." + p] = pair;
        foreach (var (b, _) in bn.named_buffers()) _byParameter[bnName + "." + b] = pair;
    }

    static bool HasFastKernel(nn.Module module) => module is MaxPool2d || module is Conv2d conv && (ConvArgs.FewChannels(conv) || ConvArgs.Direct(conv) || ConvArgs.Grouped(conv));

    /// <summary>What a module runs as on the fast kernels, or null.</summary>
    static (nn.Module<Tensor, Tensor> Fast, Kind Kind)? FastKernel(nn.Module module) => module switch
    {
        MaxPool2d pool => (new FastMaxPool(pool), Kind.Pool),
        Conv2d conv when ConvArgs.FewChannels(conv) => (new FewChannelConv(conv), Kind.Conv),
        Conv2d conv when ConvArgs.Direct(conv) => (new FewChannelConv(conv), Kind.Direct),
        Conv2d conv when ConvArgs.Grouped(conv) => (new FewChannelConv(conv), Kind.Grouped),
        _ => null,
    };

    /// <summary>Swaps <paramref name="module"/> for its fast-kernel replacement, if it has one and is not a folded
    /// convolution (which has the same path inside its fused convolution).</summary>
    void AddFast(nn.Module module, Action<nn.Module<Tensor, Tensor>> set)
    {
        if (_paired.Contains(module) || module is not nn.Module<Tensor, Tensor> original || !HasFastKernel(module) || FastKernel(module) is not { } fast) return;
        _swaps.Add(new Swap(() => set(fast.Fast), () => set(original), fast.Kind, fast.Fast));
        _runsFor[module] = fast.Fast;
    }

    /// <summary>The module that runs in place of <paramref name="module"/> (a folded batch norm's placeholder, a
    /// Sequential's copy, a fast max pool), or null.</summary>
    public nn.Module? RunsFor(nn.Module module) => _runsFor.GetValueOrDefault(module);

    /// <summary>Unfolds, for good, the pair that parameter or buffer <paramref name="name"/> belongs to: the caller
    /// holds the tensor and may change it, and the fused weights would not follow.</summary>
    public void Release(string name)
    {
        if (_byParameter.TryGetValue(name, out var pair)) Pin(pair); // never unpinned
    }

    /// <summary>Unfolds the pair whose convolution is <paramref name="layer"/> until the handle is disposed (nested
    /// pins count); null when the layer is not a folded convolution.</summary>
    public IDisposable? Pin(string layer) => _byConv.TryGetValue(layer, out var pair) ? Pin(pair) : null;

    /// <summary>Unfolds the pair whose batch norm is <paramref name="layer"/> until the handle is disposed: the batch
    /// norm's input (the convolution's own output) exists only unfolded. Null when the layer is no folded batch norm.</summary>
    public IDisposable? PinInput(string layer) => _byBn.TryGetValue(layer, out var pair) ? Pin(pair) : null;

    Unpin Pin(Swap pair)
    {
        lock (_gate)
            if (pair.Pins++ == 0) pair.Pin();
        return new Unpin(this, pair);
    }

    sealed class Unpin(Rewrites owner, Swap pair) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            lock (owner._gate)
            {
                if (_done) return;
                _done = true;
                if (--pair.Pins == 0) pair.Apply();
            }
        }
    }

    /// <summary>Undoes every rewrite for the duration of <paramref name="action"/> (used to check them).</summary>
    public T Undone<T>(Func<T> action)
    {
        foreach (var p in _swaps) p.Undo();
        try { return action(); }
        finally { foreach (var p in _swaps) if (p.Pins == 0) p.Apply(); }
    }

    /// <summary>Puts the original modules back (the module tree owns and disposes them) and frees the replacements.</summary>
    public void Dispose()
    {
        foreach (var p in _swaps)
        {
            p.Undo();
            foreach (var d in p.Owned) d.Dispose();
        }
        foreach (var restore in _restoreFields) restore();
        foreach (var c in _copies) c.Dispose();
        _swaps.Clear();
        _byConv.Clear();
        _byBn.Clear();
        _byParameter.Clear();
        _runsFor.Clear();
        _restoreFields.Clear();
        _copies.Clear();
    }

    /// <summary>What runs in place of a Sequential with rewritten items: the same items in order (hooks on them fire),
    /// with the rewritten ones swapped. Not registered anywhere: it owns none of its items.</summary>
    internal sealed class SequentialCopy(List<nn.Module<Tensor, Tensor>> items) : nn.Module<Tensor, Tensor>("Sequential")
    {
        public readonly List<nn.Module<Tensor, Tensor>> Items = items;

        public override Tensor forward(Tensor x)
        {
            foreach (var m in Items) x = m.call(x);
            return x;
        }
    }

    /// <summary>A convolution with folded weights. Its tensors are plain tensors, not registered parameters: the module
    /// tree's parameters and state dict stay the model's own.</summary>
    internal sealed class FusedConv(Tensor weight, Tensor bias, long[] stride, long[] padding, long[] dilation, long groups)
        : nn.Module<Tensor, Tensor>("FusedConv")
    {
        readonly ConvArgs _args = new(() => weight, () => bias, stride, padding, dilation, groups);

        public override Tensor forward(Tensor x) => _args.Run(x);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                weight.Dispose();
                bias.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
