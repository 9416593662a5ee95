using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Installs the rescale rule on a module tree (see <see cref="ReluRule.Rescale"/>).</summary>
static class RescaleRule
{
    /// <summary>Hooks every ReLU module, the functional ReLU that ends TorchVision's residual blocks and every max pool.</summary>
    public static void Install(IReadOnlyDictionary<string, nn.Module> modules, Func<nn.Module, IReadOnlyList<nn.Module>> running, List<Action> removers)
    {
        foreach (var (name, module) in modules)
        {
            if (module is ReLU { inplace: true } inplaceRelu)
            {
                // The module runs in place on a detached alias of its input, as in the model's own forward; the input's
                // half difference is taken first, and the rule is applied to the buffer the ReLU wrote.
                Tensor? pre = null, din = null;
                var h1 = inplaceRelu.register_forward_pre_hook((_, input) => { pre = input; din = Rescale.HalfDifference(input); return input.detach(); });
                var h2 = inplaceRelu.register_forward_hook((_, _, output) => Interventions.SameBuffer(output, pre!)
                    ? Rescale.AfterInPlaceRelu(output, din!, pre!) : Rescale.Nonlinear(pre!, Nonlinearity.Relu));
                removers.Add(() => h1.remove()); removers.Add(() => h2.remove());
            }
            else if (module is ReLU relu)
            {
                // The module gets an empty tensor (its output is replaced anyway); the rule reads the pre-activation.
                Tensor? pre = null;
                var h1 = relu.register_forward_pre_hook((_, input) => { pre = input; return empty(0, dtype: input.dtype); });
                var h2 = relu.register_forward_hook((_, _, _) => Rescale.Nonlinear(pre!, Nonlinearity.Relu));
                removers.Add(() => h1.remove()); removers.Add(() => h2.remove());
            }
            else if (module is MaxPool2d pool)
            {
                var fast = new FastMaxPool(pool);
                foreach (var r in running(pool).OfType<nn.Module<Tensor, Tensor>>())
                {
                    Tensor? input = null;
                    var h1 = r.register_forward_pre_hook((_, x) => { input = x; return x.detach(); });
                    var h2 = r.register_forward_hook((_, _, _) => Rescale.MaxPool2d(input!, fast.Kernel, fast.Stride, fast.Padding, fast.Dilation, fast.CeilMode));
                    removers.Add(() => h1.remove()); removers.Add(() => h2.remove());
                }
            }
            else if (module.GetType().Name is "BasicBlock" or "Bottleneck" && module is nn.Module<Tensor, Tensor> block)
            {
                // out = relu(lastBn(...) + identity): the block adds and ReLUs in place on a detached alias of the last
                // batch norm's output, whose half difference is taken first; the identity's is added once it is known,
                // and the rule is applied to the buffer the block wrote. Were the block not in place, bnOut is intact
                // and the sum is recomputed.
                var children = module.named_children().ToDictionary(c => c.name, c => c.module);
                var lastBn = children.GetValueOrDefault("bn3") ?? children.GetValueOrDefault("bn2")
                    ?? throw new LoupeException($"block '{name}' has no bn2/bn3: cannot apply the rescale rule to its ReLU");
                var down = children.GetValueOrDefault("downsample");
                Tensor? blockInput = null, bnOut = null, identity = null, din = null;
                var h1 = block.register_forward_pre_hook((_, input) => { blockInput = input; identity = null; return null!; });
                removers.Add(() => h1.remove());
                foreach (var bn in running(lastBn).OfType<nn.Module<Tensor, Tensor>>())
                {
                    var h2 = bn.register_forward_hook((_, _, output) => { bnOut = output; din = Rescale.HalfDifference(output); return output.detach(); });
                    removers.Add(() => h2.remove());
                }
                foreach (var d in down is null ? [] : running(down).OfType<nn.Module<Tensor, Tensor>>())
                {
                    var h3 = d.register_forward_hook((_, _, output) => { identity = output; return null!; });
                    removers.Add(() => h3.remove());
                }
                var h4 = block.register_forward_hook((_, _, output) =>
                {
                    var id = identity ?? blockInput!;
                    if (!Interventions.SameBuffer(output, bnOut!)) return Rescale.Nonlinear(bnOut! + id, Nonlinearity.Relu);
                    Rescale.AddHalfDifference(din!, id);
                    return Rescale.AfterInPlaceRelu(output, din!, bnOut!, id);
                });
                removers.Add(() => h4.remove());
            }
        }
    }
}
