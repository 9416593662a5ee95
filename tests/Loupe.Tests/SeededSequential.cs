using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>A test model: named layers in a Sequential held in the field <c>body</c> (parameters "body.&lt;layer&gt;.…"),
/// every parameter drawn from N(0, 0.3²) and batch norms' running statistics set (mean N(0, 0.1²), variance
/// U(0.5, 1.5)), all from one seeded generator.</summary>
internal sealed class SeededSequential : nn.Module<Tensor, Tensor>
{
    public readonly nn.Module<Tensor, Tensor> body;

    public SeededSequential(string name, ulong seed, params (string Name, nn.Module<Tensor, Tensor> Layer)[] layers) : base(name)
    {
        body = nn.Sequential(layers);
        RegisterComponents();
        using var _ = no_grad();
        var g = new Generator(seed);
        foreach (var p in parameters()) p.copy_(randn(p.shape, generator: g) * 0.3);
        foreach (var (buffer, b) in named_buffers())
            if (buffer.EndsWith("running_var", StringComparison.Ordinal)) b.copy_(rand(b.shape, generator: g) + 0.5);
            else if (buffer.EndsWith("running_mean", StringComparison.Ordinal)) b.copy_(randn(b.shape, generator: g) * 0.1);
    }

    public override Tensor forward(Tensor x) => body.call(x);
}
