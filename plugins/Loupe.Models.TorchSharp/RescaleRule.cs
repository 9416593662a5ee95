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
            else if (Interventions.IsBlock(module))
            {
                // out = relu(lastBn(...) + identity): the block adds and ReLUs in place on a detached alias of the last
                // batch norm's output, whose half difference is taken first; the identity's is added once it is known,
                // and the rule is applied to the buffer the block wrote. Were the block not in place, bnOut is intact
                // and the sum is recomputed.
                Tensor? din = null;
                Interventions.HookBlock(name, module, running, removers, "apply the rescale rule to its ReLU",
                    bnOut => { din = Rescale.HalfDifference(bnOut); return bnOut.detach(); },
                    (output, bnOut, id) =>
                    {
                        if (!Interventions.SameBuffer(output, bnOut)) return Rescale.Nonlinear(bnOut + id, Nonlinearity.Relu);
                        Rescale.AddHalfDifference(din!, id);
                        return Rescale.AfterInPlaceRelu(output, din!, bnOut, id);
                    });
            }
        }
    }
}
