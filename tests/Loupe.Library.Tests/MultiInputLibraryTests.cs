using Loupe.Abstractions;
using Loupe.Testing;

namespace Loupe.Library.Tests;

/// <summary>Issue 18 item 10 through the library: a model with a side input predicts with the side input's values,
/// not zeros (the logits of tests/fixtures/make_multi_input_fixtures.py with the constant side input).</summary>
[Collection("library")]
public class MultiInputLibraryTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", name);

    [Fact]
    public void PredictUsesTheSideInputsOfTheModelOptions()
    {
        using var model = LoupeModel.Load("onnx",
            new { path = Fixture("multi_net.onnx"), side_inputs = new[] { new { name = "meta", file = Fixture("multi_meta_const.npy") } } },
            new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins], Threads = 1 });
        var predictions = model.Predict(Npy.Read(Fixture("multi_image.npy")), k: 3);
        var logits = Npy.Read(Fixture("multi_logits_const.npy")).Data;
        Assert.Equal(3, predictions.Count);
        for (int i = 0; i < 3; i++)
            foreach (var p in predictions[i])
                Assert.True(Math.Abs(p.Score - logits[3 * i + p.Index]) < 1e-5, $"row {i} class {p.Index}: {p.Score} vs {logits[3 * i + p.Index]}");
    }
}
