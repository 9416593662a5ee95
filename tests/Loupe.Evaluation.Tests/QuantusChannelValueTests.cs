namespace Loupe.Evaluation.Tests;

/// <summary>The metrics that re-run the method, with <c>features: values</c> on a 3-channel model: Quantus flattens the
/// per-channel maps its explain_func gives (normalise and |·| per value), where Loupe's default sums the channels.</summary>
public partial class QuantusReferenceTests
{
    [Fact]
    public void ReexplainingMetricsOnChannelValuesGiveQuantusNumbers()
    {
        // Quantus called one input at a time (its normalisation per map), re-explaining with the per-channel signed
        // input gradient (Loupe's saliency with abs: false, reduce: none); RandomLogit's draw with its seed 42 and
        // batches of one.
        var r = OnRgbCnn(6, """
              - { id: g, uses: saliency, with: { abs: false } }
              - { id: cont, uses: continuity, with: { of: g, sweep: quantus, features: values } }
              - { id: cont_px, uses: continuity, with: { of: g, sweep: quantus } }
              - { id: rl, uses: random-logit, with: { of: g, features: values, draw: quantus, quantus_batch_size: 1, similarity: spearman } }
              - { id: rl_ssim, uses: random-logit, with: { of: g, features: values, draw: quantus, quantus_batch_size: 1, similarity: flat-ssim } }
              - { id: rl_px, uses: random-logit, with: { of: g, draw: quantus, quantus_batch_size: 1, similarity: spearman } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Close("continuity, channel values", Want("rgb_continuity"), Values(r, "cont", "continuity"), 1e-4);
        m.Close("random-logit (spearman), channel values", Want("rgb_random_logit"), Values(r, "rl", "random_logit"), 1e-5);
        m.Close("random-logit (flat ssim), channel values", Want("rgb_random_logit_ssim"), Values(r, "rl_ssim", "random_logit"), 1e-4);
        m.Check();
        // The channel-summed maps give other numbers on three channels.
        Assert.Contains(Values(r, "cont_px", "continuity").Zip(Want("rgb_continuity")), p => Math.Abs(p.First - p.Second) > 0.05);
        Assert.Contains(Values(r, "rl_px", "random_logit").Zip(Want("rgb_random_logit")), p => Math.Abs(p.First - p.Second) > 0.02);
    }

    [Fact]
    public void RandomLogitOnChannelValuesRefusesTwoDimensionalSsim()
    {
        var r = OnRgbCnn(6, """
              - { id: g, uses: saliency, with: { abs: false } }
              - { id: rl, uses: random-logit, with: { of: g, features: values } }
            """);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("similarity: ssim needs 2-D maps — use flat-ssim", QualityTests.Failures(r));
    }
}
