using Loupe.Abstractions;
using Loupe.Models.Onnx;

namespace Loupe.Onnx.Tests;

/// <summary><c>preset: imagenet</c> and the warning for RGB models left at mean 0 / std 1.</summary>
public class PresetTests
{
    static (IModel Model, List<string> Warnings) Load(OnnxOptions o)
    {
        var warnings = new List<string>();
        return (new OnnxAdapter().Load(o, Env.Context with { Warn = warnings.Add }), warnings);
    }

    static string Vit => Path.Combine(FamilyTests.Folder, "vit.onnx");

    [Fact]
    public void ImageNetPresetGivesTorchvisionsMeanAndStd()
    {
        var (m, warnings) = Load(new OnnxOptions { Path = Vit, Preset = "imagenet" });
        using (m)
        {
            Assert.Equal([0.485f, 0.456f, 0.406f], m.DefaultInput.Mean);
            Assert.Equal([0.229f, 0.224f, 0.225f], m.DefaultInput.Std);
            Assert.Empty(warnings);
        }
        var (m2, _) = Load(new OnnxOptions { Path = Vit, Preset = "ImageNet", Mean = [0.5f] });   // given values win
        using (m2) Assert.Equal([0.5f, 0.5f, 0.5f], m2.DefaultInput.Mean);
    }

    [Fact]
    public void AnRgbModelWithoutNormalisationWarnsAndAGreyOneDoesNot()
    {
        var (m, warnings) = Load(new OnnxOptions { Path = Vit });
        m.Dispose();
        Assert.Contains("preset: imagenet", Assert.Single(warnings));
        var (g, none) = Load(new OnnxOptions { Path = Path.Combine(Env.RepoRoot, "samples", "models", "fashion-cnn", "fashion-cnn.onnx") });
        g.Dispose();
        Assert.Empty(none);
        var (s, given) = Load(new OnnxOptions { Path = Vit, Mean = [0.5f], Std = [0.25f] });
        s.Dispose();
        Assert.Empty(given);
    }

    [Fact]
    public void UnknownPresetSuggestsTheNearest()
    {
        var e = Assert.Throws<LoupeException>(() => Load(new OnnxOptions { Path = Vit, Preset = "imagenett" }));
        Assert.Contains("did you mean 'imagenet'", e.Message);
    }
}
