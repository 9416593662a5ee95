using Loupe.Abstractions.Toolkit;
using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>DeconvNet's ReLU after the ReLU already ran in place, without autograd, on the first input's buffer: the
/// forward is that buffer (relu of the inputs' sum), the backward relu(gradient) to every input (the sum's derivative
/// is 1 for each). No pass over the activations in the forward.</summary>
sealed class DeconvPass : GuardedFunction<DeconvPass>
{
    public override string Name => "LoupeDeconvPass";
    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        ctx.save_data("inputs", vars.Length);
        return ((Tensor)vars[0]).alias();
    }
    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var g = grad.clamp_min(0);
        return [.. Enumerable.Repeat(g, (int)ctx.get_data("inputs"))];
    }
}

/// <summary>Hook-based interventions on a TorchSharp module tree.</summary>
static class Interventions
{
    /// <summary>Replaces the backward rule of every ReLU module and of the functional ReLU that ends TorchVision's
    /// residual blocks. Guided backprop wraps each ReLU's (and block's) output in <see cref="PositiveGradient"/>.
    /// DeconvNet must drop the forward mask: in-place ReLUs and blocks run on a detached alias and
    /// <see cref="DeconvPass"/> returns the result with a relu(gradient) backward; a module that did not work in place
    /// gets <see cref="DeconvRelu"/> of its kept pre-activation. Install the override before any capture of the same
    /// modules (captures registered earlier would see the module's own output).</summary>
    /// <param name="running">The modules that may run in a module's place (a folded batch norm's placeholder).</param>
    public static IDisposable OverrideRelu(IReadOnlyDictionary<string, nn.Module> modules, ReluRule rule, Func<nn.Module, IReadOnlyList<nn.Module>> running, double beta = 10)
    {
        var removers = new List<Action>();
        try
        {
            if (rule == ReluRule.Rescale) RescaleRule.Install(modules, running, removers);
            else if (rule == ReluRule.BetaSmooth) InstallBetaSmooth(modules, running, beta, removers);
            else foreach (var (name, module) in modules)
            {
                if (rule == ReluRule.Guided && (module is ReLU || IsBlock(module)) && module is nn.Module<Tensor, Tensor> m)
                {
                    // Guided backprop needs no pre-activation: the ReLU's own backward keeps the gradient where its
                    // input > 0, so wrapping its output (or a block's, which ends in a functional ReLU) in the
                    // positive-gradient identity gives (x > 0)·(g > 0)·g with no extra pass over the activations.
                    var h = m.register_forward_hook((_, _, output) => PositiveGradient.apply(output));
                    removers.Add(() => h.remove());
                }
                else if (module is ReLU { inplace: true } inplaceRelu)
                {
                    // DeconvNet at an in-place ReLU: the module runs on a detached alias of its input (same buffer, no
                    // autograd record), so the buffer holds relu(x) and DeconvPass hands relu(gradient) to x's producer.
                    Tensor? pre = null;
                    var h1 = inplaceRelu.register_forward_pre_hook((_, input) => { pre = input; return input.detach(); });
                    var h2 = inplaceRelu.register_forward_hook((_, _, output) => SameBuffer(output, pre!) ? DeconvPass.apply(pre!) : DeconvRelu.apply(pre!));
                    removers.Add(() => h1.remove());
                    removers.Add(() => h2.remove());
                }
                else if (module is ReLU relu)
                {
                    Tensor? pre = null;
                    // The module itself gets an empty tensor (its output is replaced below anyway): no copy of the
                    // input for its in-place ReLU to overwrite, and no wasted ReLU pass. Forward hooks chain, so a
                    // capture registered after this override sees the replaced output.
                    var h1 = relu.register_forward_pre_hook((_, input) => { pre = input; return empty(0, dtype: input.dtype); });
                    var h2 = relu.register_forward_hook((_, _, _) => DeconvRelu.apply(pre!));
                    removers.Add(() => h1.remove());
                    removers.Add(() => h2.remove());
                }
                else if (IsBlock(module))
                    // The block's own add and ReLU run on a detached alias of the last batch norm's output. TorchVision's
                    // blocks add and ReLU in place, so that buffer then holds relu(bnOut + identity): DeconvPass returns it
                    // and sends relu(gradient) to both terms. Were they not in place, bnOut is intact and is recomputed.
                    HookBlock(name, module, running, removers, "override its ReLU", bnOut => bnOut.detach(),
                        (output, bnOut, identity) => SameBuffer(output, bnOut) ? DeconvPass.apply(bnOut, identity) : DeconvRelu.apply(bnOut + identity));
            }
        }
        catch
        {
            foreach (var r in removers) r();
            throw;
        }
        return new Handle(removers);
    }

    /// <summary>β-smooth at every ReLU module (in place or not: the module runs on an empty tensor and its output is
    /// <see cref="BetaSmoothRelu"/> of the kept input) and at the functional ReLU that ends TorchVision's residual blocks:
    /// the last batch norm hands the block a copy to add to and ReLU in place, so that its own output stays intact, and
    /// the block's output becomes BetaSmoothRelu(bnOut + identity).</summary>
    static void InstallBetaSmooth(IReadOnlyDictionary<string, nn.Module> modules, Func<nn.Module, IReadOnlyList<nn.Module>> running, double beta, List<Action> removers)
    {
        if (!modules.Values.Any(m => m is ReLU || IsBlock(m)))
            throw new LoupeException("β-smooth changes the backward pass of ReLU modules, and this model has none (its activations are of another kind): the map would be the plain gradient's");
        foreach (var (name, module) in modules)
        {
            if (module is ReLU relu)
            {
                Tensor? pre = null;
                var h1 = relu.register_forward_pre_hook((_, input) => { pre = input; return empty(0, dtype: input.dtype); });
                var h2 = relu.register_forward_hook((_, _, _) => BetaSmoothRelu.apply(pre!, beta));
                removers.Add(() => h1.remove());
                removers.Add(() => h2.remove());
            }
            else if (IsBlock(module))
                HookBlock(name, module, running, removers, "override its ReLU", bnOut => bnOut.detach().clone(),
                    (_, bnOut, identity) => BetaSmoothRelu.apply(bnOut + identity, beta));
        }
    }

    /// <summary>Whether a module is a TorchVision residual block (BasicBlock, Bottleneck), whose final ReLU is functional.</summary>
    internal static bool IsBlock(nn.Module module) => module.GetType().Name is "BasicBlock" or "Bottleneck" && module is nn.Module<Tensor, Tensor>;

    /// <summary>Hooks on a TorchVision residual block, out = relu(lastBn(…) + identity) with identity = downsample(x) or x
    /// and a functional (in-place) ReLU: the last batch norm (and whatever runs in its place) hands the block
    /// <paramref name="handOn"/>(its output) and keeps its output; the block's output becomes
    /// <paramref name="output"/>(the block's own output, the batch norm's output, the identity).</summary>
    internal static void HookBlock(string name, nn.Module module, Func<nn.Module, IReadOnlyList<nn.Module>> running, List<Action> removers,
        string what, Func<Tensor, Tensor> handOn, Func<Tensor, Tensor, Tensor, Tensor> output)
    {
        var block = (nn.Module<Tensor, Tensor>)module;
        var children = module.named_children().ToDictionary(c => c.name, c => c.module);
        var lastBn = children.GetValueOrDefault("bn3") ?? children.GetValueOrDefault("bn2")
            ?? throw new LoupeException($"block '{name}' has no bn2/bn3: cannot {what}");
        var down = children.GetValueOrDefault("downsample");
        Tensor? blockInput = null, bnOut = null, identity = null;
        var h1 = block.register_forward_pre_hook((_, input) => { blockInput = input; identity = null; return null!; });
        removers.Add(() => h1.remove());
        foreach (var bn in running(lastBn).OfType<nn.Module<Tensor, Tensor>>())
        {
            var h2 = bn.register_forward_hook((_, _, o) => { bnOut = o; return handOn(o); });
            removers.Add(() => h2.remove());
        }
        foreach (var d in down is null ? [] : running(down).OfType<nn.Module<Tensor, Tensor>>())
        {
            var h3 = d.register_forward_hook((_, _, o) => { identity = o; return null!; });
            removers.Add(() => h3.remove());
        }
        var h4 = block.register_forward_hook((_, _, o) => output(o, bnOut!, identity ?? blockInput!));
        removers.Add(() => h4.remove());
    }

    [System.Runtime.InteropServices.DllImport("LibTorchSharp")]
    static extern IntPtr THSStorage_data_ptr(IntPtr tensor);

    /// <summary>True when both tensors start at the same memory (an in-place op returned its input's buffer).</summary>
    internal static bool SameBuffer(Tensor a, Tensor b) =>
        a.storage_offset() == b.storage_offset() && THSStorage_data_ptr(a.Handle) == THSStorage_data_ptr(b.Handle);

    /// <summary>Replaces a module's output by <paramref name="transform"/>(output). The forward pass continues on an alias
    /// of the replacement (the same tensor and autograd node under another handle): a TorchSharp Sequential disposes each
    /// member's output once the next member has run, which disposed the caller's own replacement (layer integrated
    /// gradients at <c>layer3.0</c> of a ResNet, or at a ViT block, failed: "Tensor invalid -- empty handle").</summary>
    public static IDisposable Intervene(nn.Module module, string name, Func<Tensor, Tensor> transform)
    {
        if (module is not nn.Module<Tensor, Tensor> m)
            throw new LoupeException($"layer '{name}' ({module.GetType().Name}) does not map one tensor to one tensor");
        var h = m.register_forward_hook((_, _, output) =>
        {
            var replaced = transform(output);
            return ReferenceEquals(replaced, output) ? replaced : replaced.alias();
        });
        return new Handle([() => h.remove()]);
    }

    /// <summary>Runs the removers once when disposed.</summary>
    internal sealed class Handle(List<Action> removers) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in removers) r();
            removers.Clear();
        }
    }
}
