using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>Ablation-CAM's <c>ratio_channels_to_ablate</c> against pytorch-grad-cam's channel choice and score assembly
/// written out in numpy (tests/fixtures/make_ablation_ratio_fixtures.py), on the demo CNN.</summary>
public class AblationRatioTests
{
    static Loupe.Core.RunResult Run(string steps)
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline(steps, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        return r;
    }

    /// <summary>Below 1 only the channels most and least inside Eigen-CAM's mask are ablated: on relu3 the dead
    /// channels (NaN scores) fill the high list; on conv3 (negative values) the ablation values follow each channel's
    /// place in the ablation list's batches of 8.</summary>
    [Fact]
    public void FewerChannelsAreAblatedAsPytorchGradCamChoosesThem()
    {
        var r = Run("""
              - { id: r1, uses: ablation-cam, with: { layer: relu3, convention: pytorch-grad-cam, ratio_channels_to_ablate: 0.1 } }
              - { id: c2, uses: ablation-cam, with: { layer: conv3, convention: pytorch-grad-cam, batch_size: 8, micro_batch: 5, ratio_channels_to_ablate: 0.2 } }
              - { id: all, uses: ablation-cam, with: { layer: conv3, convention: pytorch-grad-cam, batch_size: 8 } }
            """);
        TechniqueTests.Close(TechniqueTests.Stack(r, "r1", "ablation-cam-layer"), "abl_ratio_relu3_r01_pgc.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "c2", "ablation-cam-layer"), "abl_ratio_conv3_r02_pgc.npy", 1e-4);
        // Ablating a fifth of the channels is not ablating them all.
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "all", "ablation-cam-layer"), Npy.Read(TestEnv.Fixture("abl_ratio_conv3_r02_pgc.npy")).Data) > 0.05);
    }

    /// <summary>Above 0.5 the two lists overlap: pytorch-grad-cam's assembly stops at the first channel ablated twice
    /// (every later channel keeps weight 0), which its convention reproduces; the default convention gives every
    /// ablated channel its own weight (ablated to 0).</summary>
    [Fact]
    public void OverlappingListsAssembleAsEachConventionSays()
    {
        var r = Run("""
              - { id: pgc, uses: ablation-cam, with: { layer: conv3, convention: pytorch-grad-cam, batch_size: 8, ratio_channels_to_ablate: 0.6 } }
              - { id: zero, uses: ablation-cam, with: { layer: conv3, ratio_channels_to_ablate: 0.6 } }
            """);
        TechniqueTests.Close(TechniqueTests.Stack(r, "pgc", "ablation-cam-layer"), "abl_ratio_conv3_r06_pgc.npy", 1e-4);
        TechniqueTests.Close(TechniqueTests.Stack(r, "zero", "ablation-cam-layer"), "abl_ratio_conv3_r06_zero.npy", 1e-4);
        Assert.True(TestEnv.RelL2(Npy.Read(TestEnv.Fixture("abl_ratio_conv3_r06_pgc.npy")).Data, Npy.Read(TestEnv.Fixture("abl_ratio_conv3_r06_zero.npy")).Data) > 0.05);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.5)]
    public void RatiosOutsideTheUnitIntervalAreRefused(double ratio)
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline($"  - {{ id: a, uses: ablation-cam, with: {{ layer: relu3, ratio_channels_to_ablate: {ratio.ToString(System.Globalization.CultureInfo.InvariantCulture)} }} }}\n"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(r.Errors, e => e.ToString().Contains("ratio_channels_to_ablate", StringComparison.Ordinal));
    }
}
