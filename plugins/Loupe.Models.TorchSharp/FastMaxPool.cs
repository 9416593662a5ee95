using Loupe.Abstractions.Toolkit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Runs in place of a <see cref="MaxPool2d"/> (see <see cref="Rewrites"/>): the same values, indices and
/// gradients, faster on NCHW batches (<see cref="MaxPooling"/>).</summary>
sealed class FastMaxPool : nn.Module<Tensor, Tensor>
{
    internal readonly long[] Kernel, Stride, Padding, Dilation;
    internal readonly bool CeilMode;

    public FastMaxPool(MaxPool2d pool) : base("MaxPool2d")
    {
        static long[] Pair(long[]? v, long[] fallback) => v is null || v.Length == 0 ? fallback : v.Length == 1 ? [v[0], v[0]] : v;
        Kernel = Pair(pool.kernel_size, [1, 1]);
        Stride = Pair(pool.stride, Kernel);
        Padding = Pair(pool.padding, [0, 0]);
        Dilation = Pair(pool.dilation, [1, 1]);
        CeilMode = pool.ceil_mode;
    }

    public override Tensor forward(Tensor x) => MaxPooling.Pool2d(x, Kernel, Stride, Padding, Dilation, CeilMode);
}
