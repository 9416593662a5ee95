namespace Loupe.Evaluation.Tests;

/// <summary><c>score: quantus</c> on the removal curves: numpy's trapz(curve, dx=1), as Quantus's PixelFlipping
/// (return_auc_per_sample) and Selectivity (get_auc_score) give it, against the curves the run wrote.</summary>
public class AucConventionTests
{
    [Fact]
    public void QuantusScoreIsTheTrapezoidWithUnitSteps()
    {
        var r = Env.FixtureRun("""
              - { id: pf, uses: pixel-flipping, with: { of: m, features_in_step: 16 } }
              - { id: pf-q, uses: pixel-flipping, with: { of: m, features_in_step: 16, score: quantus } }
              - { id: sel, uses: selectivity, with: { of: m, patch: 4 } }
              - { id: sel-q, uses: selectivity, with: { of: m, patch: 4, score: quantus } }
            """);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        foreach (var (step, key) in new[] { ("pf", "pixel_flipping"), ("sel", "selectivity") })
        {
            var curve = Npy.Read(Path.Combine(r.OutDir!, step + "-q", key + "_curve.npy"));
            long n = curve.Shape[0], t = curve.Shape[1];
            Assert.Equal(curve.Data, Npy.Read(Path.Combine(r.OutDir!, step, key + "_curve.npy")).Data);
            var (paper, quantus) = (Env.InputValues(r, step, key), Env.InputValues(r, step + "-q", key));
            for (int i = 0; i < n; i++)
            {
                var c = curve.Data.AsSpan((int)(i * t), (int)t).ToArray();
                double trapz = 0;
                for (int k = 1; k < t; k++) trapz += (c[k] + c[k - 1]) / 2.0;
                Assert.Equal(trapz, quantus[i], 5);
                Assert.Equal(trapz / (t - 1), paper[i], 6);
            }
        }
    }
}
