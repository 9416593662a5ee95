using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>Captum's <c>multiply_by_inputs=False</c> on integrated-gradients, gradient-shap, deeplift and deeplift-shap:
/// the local attribution, which times (x − x′) is the default global one (audit of 2026-12-05: the option could not be
/// expressed).</summary>
public class MultiplyByInputsTests
{
    [Fact]
    public void TheLocalAttributionTimesTheInputIsTheGlobalOne()
    {
        // Zero baseline (x′ = 0) and, for gradient-shap, no noise: x − x′ = x for every path point and sample.
        var refs = Path.Combine(TestEnv.TempDir("loupe-mbi"), "refs.npy");
        File.WriteAllBytes(refs, Npy.Encode(new NdArray(new float[2 * 784], [2, 1, 28, 28])));   // two zero references
        var draws = Path.Combine(Path.GetDirectoryName(refs)!, "draws.npy");                       // gradient-shap: α, baseline 0
        File.WriteAllBytes(draws, Npy.Encode(new NdArray([0.3f, 0, 0.7f, 0, 0.5f, 0, 0.9f, 0], [4, 2])));
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: ig, uses: integrated-gradients, with: { steps: 8 } }
              - { id: ig-local, uses: integrated-gradients, with: { steps: 8, multiply_by_inputs: false } }
              - { id: gs, uses: gradient-shap, with: { draws_file: {{TestEnv.Yaml(draws)}} } }
              - { id: gs-local, uses: gradient-shap, with: { draws_file: {{TestEnv.Yaml(draws)}}, multiply_by_inputs: false } }
              - { id: dl, uses: deeplift }
              - { id: dl-local, uses: deeplift, with: { multiply_by_inputs: false } }
              - { id: dls, uses: deeplift-shap, with: { baselines_file: {{TestEnv.Yaml(refs)}} } }
              - { id: dls-local, uses: deeplift-shap, with: { baselines_file: {{TestEnv.Yaml(refs)}}, multiply_by_inputs: false } }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var x = Npy.Read(TestEnv.Fixture("fashion_input.npy")).Data;
        foreach (var (step, name) in new[] { ("ig", "integrated-gradients"), ("gs", "gradient-shap"), ("dl", "deeplift"), ("dls", "deeplift-shap") })
        {
            var global = TechniqueTests.Stack(r, step, name);
            var local = TechniqueTests.Stack(r, step + "-local", name);
            Assert.Equal(x.Length, global.Length);
            double err = 0, norm = 0;
            for (int i = 0; i < x.Length; i++) { err += Math.Pow(local[i] * x[i] - global[i], 2); norm += global[i] * (double)global[i]; }
            Assert.True(Math.Sqrt(err / norm) < 1e-5, $"{step}: relative L2 {Math.Sqrt(err / norm)}");
            Assert.NotEqual(global, local);
        }
    }
}
