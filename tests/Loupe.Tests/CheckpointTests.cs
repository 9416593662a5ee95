using Loupe.Abstractions;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Checkpoints as training scripts save them (tests/fixtures/checkpoints/make_checkpoint_fixtures.py): a dict
/// holding the state_dict beside other entries, names with a prefix.</summary>
public class CheckpointTests
{
    static IModel Load(string file, string? key = null, string? strip = null) => new TorchVisionAdapter().Load(
        new TorchVisionOptions { Architecture = "fashion-cnn", Weights = TestEnv.Fixture(file), WeightsKey = key, StripPrefix = strip }, new ModelLoadContext(TestEnv.RepoRoot, 0));

    static float[] Logits(IModel m)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = Npy.Read(TestEnv.Fixture("fashion_input.npy")).ToTensor();
        return m.Forward(x).contiguous().ToArray<float>();
    }

    [Fact]
    public void StateDictInsideACheckpointLoadsWithItsPrefixStripped()
    {
        using var plain = Load("fashion_cnn_seed0.pt");
        var want = Logits(plain);
        // {'state_dict': {'model.conv1.weight': ...}, 'epoch': 3}: the common key is found, the prefix is stripped on request.
        using (var lightning = Load("checkpoints/lightning_style.pt", strip: "model.")) Assert.Equal(want, Logits(lightning));
        using (var named = Load("checkpoints/lightning_style.pt", key: "state_dict", strip: "model.")) Assert.Equal(want, Logits(named));
        // {'model': {'module.conv1.weight': ...}}: DataParallel's prefix is removed without being asked.
        using (var wrapped = Load("checkpoints/wrapped_model.pt")) Assert.Equal(want, Logits(wrapped));
    }

    [Fact]
    public void CheckpointMistakesAreExplained()
    {
        var e = Assert.Throws<LoupeException>(() => Load("checkpoints/lightning_style.pt"));
        Assert.Contains("strip_prefix: 'model.'", e.Message);
        e = Assert.Throws<LoupeException>(() => Load("checkpoints/lightning_style.pt", key: "sate_dict"));
        Assert.Contains("did you mean 'state_dict'", e.Message);
        Assert.Contains("epoch", e.Message);
        e = Assert.Throws<LoupeException>(() => Load("checkpoints/lightning_style.pt", key: "epoch"));
        Assert.Contains("not a dict of tensors", e.Message);
        e = Assert.Throws<LoupeException>(() => Load("checkpoints/wrapped_model.pt", strip: "model."));
        Assert.Contains("strip_prefix 'model.' starts no parameter name", e.Message);
    }
}
