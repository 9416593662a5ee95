using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Onnx.Tests;

/// <summary>The static pass that bounds output shapes before ONNX Runtime sees a model (issue 26 item 7; the hostile
/// files are in tests/corpus/onnx-runtime, run by CorpusTests). Here: on real exported networks the pass must infer
/// the shapes ONNX Runtime actually produces (so its bound is about the real sizes), for most values of the graph.</summary>
public class OrtGuardTests
{
    [Theory]
    [InlineData("resnet")]
    [InlineData("squeezenet1_1")]
    [InlineData("shufflenet_v2")]
    [InlineData("inception_v3")]
    [InlineData("mobilenet_v3_op13")]
    [InlineData("convnext_op13")]
    [InlineData("vit_op13")]
    [InlineData("swin_op13")]
    public void InferredShapesAreTheShapesOnnxRuntimeProduces(string name)
    {
        var r = FamilyTests.Reference.Read(FamilyTests.Folder, name);
        var options = new OnnxOptions { Path = Path.Combine(FamilyTests.Folder, name + ".onnx"), Channels = 3, Height = r.Size, Width = r.Size };
        var file = OnnxFile.Load(options.Path, 1L << 30);
        var shapes = OrtGuard.Shapes(file, [1, 3, r.Size, r.Size]);
        using var ort = Env.LoadOrt(options);
        var values = file.Model.Graph.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        var layers = ort.Layers.Select(l => l.Name).Where(values.Contains).ToList(); // float node outputs, not node-name aliases
        var inferred = layers.Where(shapes.ContainsKey).ToList();
        using var capture = ort.Capture(inferred, forGradients: false);
        using var scope = NewDisposeScope();
        ort.Forward(zeros(1, 3, r.Size, r.Size));
        foreach (var layer in inferred)
            Assert.True(shapes[layer].SequenceEqual(capture[layer].shape), $"{name}: {layer}: inferred ({string.Join("×", shapes[layer])}), ONNX Runtime gives ({string.Join("×", capture[layer].shape)})");
        double coverage = inferred.Count / (double)layers.Count;
        Assert.True(coverage >= 0.95, $"{name}: shapes inferred for {inferred.Count} of {layers.Count} float values ({string.Join(", ", layers.Except(inferred).Take(8))} ...)");
    }
}
