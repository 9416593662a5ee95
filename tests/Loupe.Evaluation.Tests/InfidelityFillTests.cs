namespace Loupe.Evaluation.Tests;

/// <summary>infidelity's Quantus blocks take the replacement options of the other perturbing metrics (Quantus's
/// perturb_baseline and perturb_func_kwargs), checked by closed forms: no noise changes nothing, and a uniform draw
/// from a range of width 1e-7 is that constant to ~1e-7.</summary>
public class InfidelityFillTests
{
    static double[] Values(Loupe.Core.RunResult r, string step) => Env.InputValues(r, step, "infidelity");

    [Fact]
    public void BlocksTakeTheNoiseAndUniformParameters()
    {
        var r = Env.FixtureRun("""
              - { id: still, uses: infidelity, with: { of: m, perturbation: blocks, baseline: gaussian-noise, perturb_std: 0, samples: 2 } }
              - { id: noisy, uses: infidelity, with: { of: m, perturbation: blocks, baseline: gaussian-noise, samples: 2 } }
              - { id: point, uses: infidelity, with: { of: m, perturbation: blocks, baseline: uniform-step, uniform_low: 0.25, uniform_high: 0.2500001, samples: 2 } }
              - { id: constant, uses: infidelity, with: { of: m, perturbation: blocks, baseline: 0.25 } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
        // x + N(0, 0²) is x: every block's Δf and IᵀΦ are 0.
        Assert.All(Values(r, "still"), v => Assert.Equal(0.0, v, 12));
        Assert.All(Values(r, "noisy"), v => Assert.True(v > 0));
        var (point, constant) = (Values(r, "point"), Values(r, "constant"));
        for (int i = 0; i < constant.Length; i++) Assert.True(Math.Abs(point[i] - constant[i]) <= 1e-5 * Math.Abs(constant[i]) + 1e-9, $"input {i}: {point[i]} against {constant[i]}");
        Assert.NotEqual(constant, Values(r, "noisy"));
    }
}
