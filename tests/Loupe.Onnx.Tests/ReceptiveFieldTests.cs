using Loupe.Analysis.Embedding;
using Loupe.Models.Onnx;

namespace Loupe.Onnx.Tests;

/// <summary>max-patches' receptive fields on the ML.NET ResNet-18 through the ONNX interpreter: each unit's box equals
/// the bounding box of its own gradient support (asymmetric pads included).</summary>
public class ReceptiveFieldTests
{
    [Theory]
    [InlineData("Pooling255")]
    [InlineData("ReLU261")]
    public void MlnetReceptiveFieldsEqualTheGradientSupport(string layer)
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Model = "mlnet-resnet18" });
        var rf = ReceptiveFields.Measure(model, layer, model.DefaultInput, seed: 0, probes: 2);
        int lh = rf.LayerHeight, lw = rf.LayerWidth;
        foreach (var (y, x) in new[] { (0, 0), (lh - 1, lw - 1), (lh / 2, lw / 2) })
        {
            var support = ReceptiveFields.Bounds(ReceptiveFields.Support(model, layer, 3, 224, 224, y, x, probes: 2, seed: 5));
            Assert.NotNull(support);
            Assert.Equal(support.Value, rf.Box(y, x, 224, 224));
        }
    }
}
