namespace Loupe.Evaluation.Tests;

/// <summary>The robustness metrics with the other noise of Quantus's perturb_func (fixture cases
/// <c>avg_sensitivity_gaussian</c>, <c>local_lipschitz_uniform</c>): Quantus keeps the noise function's own defaults
/// (Gaussian σ 0.01, uniform U[−0.02, 0.02]) when only perturb_func is given, and so does <c>noise:</c>. numpy's draws
/// cannot be replayed: within the spread of two Quantus seeds. Local Lipschitz with Quantus's distance_manhattan as
/// its numerator (<c>norm_numerator: l1</c>) too.</summary>
public partial class QuantusReferenceTests
{
    [Fact]
    public void RobustnessMetricsWithTheOtherNoiseGiveQuantusNumbers()
    {
        var r = OnDemoCnn("inputs.npy", 8, """
              - { id: sal, uses: saliency, with: { abs: false } }
              - { id: avgs, uses: avg-sensitivity, with: { of: sal, noise: gaussian } }
              - { id: lips, uses: local-lipschitz, with: { of: sal, noise: uniform } }
              - { id: lips_wide, uses: local-lipschitz, with: { of: sal, noise: uniform, radius: 0.2 } }
              - { id: lips_l1, uses: local-lipschitz, with: { of: sal, norm_numerator: l1 } }
            """);
        Assert.True(r.ExitCode == 0, QualityTests.Failures(r));
        var m = new Mismatches();
        m.Spread("avg-sensitivity, gaussian", Want("avg_sensitivity_gaussian"), Want("avg_sensitivity_gaussian_seed1"), Values(r, "avgs", "avg_sensitivity"), 0.03);
        m.Spread("local-lipschitz, uniform", Want("local_lipschitz_uniform"), Want("local_lipschitz_uniform_seed1"), Values(r, "lips", "local_lipschitz"), 0.12);
        m.Spread("local-lipschitz, manhattan numerator", Want("local_lipschitz_manhattan"), Want("local_lipschitz_manhattan_seed1"), Values(r, "lips_l1", "local_lipschitz"), 0.12);
        m.Check();
        // A radius of 0.2 instead of the uniform noise's 0.02 is another metric: far outside the spread.
        Assert.All(Values(r, "lips_wide", "local_lipschitz").Zip(Want("local_lipschitz_uniform")), p => Assert.True(p.First < 0.5 * p.Second, $"{p.First} against {p.Second}"));
    }
}
