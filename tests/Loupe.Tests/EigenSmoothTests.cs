using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>The CAM option <c>eigen_smooth</c> (pytorch-grad-cam's): the layer map is the first principal component of
/// the weighted activations, against tests/fixtures/make_eigen_smooth_fixtures.py (numpy SVD, same sign rule).</summary>
public class EigenSmoothTests
{
    static readonly string[] Methods = ["grad-cam", "grad-cam-plus-plus", "xgrad-cam", "hires-cam", "layer-cam", "grad-cam-element-wise", "cam"];

    [Fact]
    public void EveryWeightedCamProjectsItsWeightedActivations()
    {
        var steps = string.Join("\n", Methods.Select((m, i) => m == "cam"
            ? $"  - {{ id: s{i}, uses: cam, with: {{ layer: relu3, head: fc, eigen_smooth: true }} }}"
            : $"  - {{ id: s{i}, uses: {m}, with: {{ layer: pool2, eigen_smooth: true }} }}"))
            + "\n  - { id: e0, uses: eigen-cam, with: { layer: pool2 } }\n  - { id: e1, uses: eigen-cam, with: { layer: pool2, eigen_smooth: true } }";
        var r = TestEnv.Run(TestEnv.FixturePipeline(steps, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var expected = Npy.Read(TestEnv.Fixture("cam_eigen_smooth.npy")).Data;
        int per = expected.Length / Methods.Length;
        var errors = Methods.Select((m, i) => (m, e: TestEnv.RelL2(TechniqueTests.Stack(r, $"s{i}", m + "-layer"), expected[(i * per)..((i + 1) * per)]))).ToList();
        Assert.True(errors.All(e => e.e <= 1e-4), string.Join("; ", errors.Select(e => $"{e.m}: {e.e:E2}")));
        // eigen-cam is a projection already: eigen_smooth leaves it (pytorch-grad-cam ignores the flag there too).
        Assert.Equal(TechniqueTests.Stack(r, "e0", "eigen-cam-layer"), TechniqueTests.Stack(r, "e1", "eigen-cam-layer"));
        // And the option changes the other maps: the plain Grad-CAM sum differs from its projection.
        var plain = TestEnv.Run(TestEnv.FixturePipeline("  - { id: g, uses: grad-cam, with: { layer: pool2 } }"));
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(plain, "g", "grad-cam-layer"), expected[..per]) > 1e-2);
    }

    [Fact]
    public void EigenSmoothWithoutChannelSumIsRefused()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("  - { id: g, uses: grad-cam, with: { layer: pool2, sum_channels: false, eigen_smooth: true } }"));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("eigen_smooth"));
    }
}
