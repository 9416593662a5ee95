using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Loupe.Models.TorchSharp;

/// <summary>Loupe's small demo CNN for 28×28 grey images (Fashion-MNIST). Three conv blocks, global average
/// pooling and a linear head (so CAM applies). State-dict names match the PyTorch definition in
/// <c>tests/fixtures/make_fixtures.py</c>.</summary>
public sealed class FashionCnn : Module<Tensor, Tensor>
{
    // Typed as modules, not Conv2d/BatchNorm2d/MaxPool2d: Rewrites swaps what runs in these slots.
    readonly Module<Tensor, Tensor> conv1, conv2, conv3;
    readonly Module<Tensor, Tensor> bn1, bn2, bn3;
    readonly ReLU relu1, relu2, relu3;
    readonly Module<Tensor, Tensor> pool1, pool2;
    readonly AdaptiveAvgPool2d gap;
    readonly Flatten flatten;
    readonly Linear fc;

    /// <summary>Creates the network with default (Kaiming-uniform) initialisation.</summary>
    public FashionCnn(int numClasses = 10, int inChannels = 1) : base("FashionCnn")
    {
        conv1 = Conv2d(inChannels, 32, 3, padding: 1); bn1 = BatchNorm2d(32); relu1 = ReLU(); pool1 = MaxPool2d(2);
        conv2 = Conv2d(32, 64, 3, padding: 1); bn2 = BatchNorm2d(64); relu2 = ReLU(); pool2 = MaxPool2d(2);
        conv3 = Conv2d(64, 128, 3, padding: 1); bn3 = BatchNorm2d(128); relu3 = ReLU();
        gap = AdaptiveAvgPool2d(1); flatten = Flatten(); fc = Linear(128, numClasses);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = pool1.call(relu1.call(bn1.call(conv1.call(x))));
        h = pool2.call(relu2.call(bn2.call(conv2.call(h))));
        h = relu3.call(bn3.call(conv3.call(h)));
        return scope.MoveToOuter(fc.call(flatten.call(gap.call(h))));
    }
}
