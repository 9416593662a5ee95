using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Tests;

/// <summary>noise-tunnel keeps an inner step's image-dependent baseline (mean, blur) that of the clean input, as
/// Captum's NoiseTunnel keeps the baseline it is given (audit of 2026-12-05: the inner step made it of each noisy copy).</summary>
public class NoiseTunnelBaselineTests
{
    [Fact]
    public void TheMeanBaselineIsTheCleanImagesMean()
    {
        // One input: its per-channel mean as a constant fill is the clean image's mean baseline. With the same fixed
        // draws, noise-tunnel around IG with fill: mean must equal noise-tunnel around IG with that constant.
        var dir = TestEnv.TempDir("loupe-ntb");
        var all = Npy.Read(TestEnv.Fixture("fashion_input.npy"));
        var one = all.Data.AsSpan(0, 784).ToArray();
        var input = Path.Combine(dir, "one.npy");
        File.WriteAllBytes(input, Npy.Encode(new NdArray(one, [1, 1, 28, 28])));
        double mean = one.Average(v => (double)v);
        var draws = TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"));
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} }
            data: { uses: npy, with: { path: {{TestEnv.Yaml(input)}} } }
            steps:
              - { id: mean, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 4, fill: mean } }, samples: 4, stdevs: 0.3, noise_file: {{draws}} } }
              - { id: const, uses: noise-tunnel, with: { inner: { uses: integrated-gradients, with: { steps: 4, fill: {{mean.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}} } }, samples: 4, stdevs: 0.3, noise_file: {{draws}} } }
            """, dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var a = TechniqueTests.Stack(r, "mean", "noise-tunnel", 1);
        var b = TechniqueTests.Stack(r, "const", "noise-tunnel", 1);
        Assert.True(TestEnv.RelL2(a, b) < 1e-5, $"relative L2 {TestEnv.RelL2(a, b)}");
    }
}
