namespace Loupe.Tests;

/// <summary>Zennit's attributors beside LRP, against PyTorch restatements of them (tests/fixtures/make_zennit_fixtures.py):
/// SmoothGrad's noise-free last iteration (noise-tunnel clean_last) and Occlusion's default occlusion function with its
/// rolled windows (occlusion convention: zennit).</summary>
public class ZennitAttributorTests
{
    [Fact]
    public void SmoothGradAndOcclusionMatchZennitsAttributors()
    {
        var draws = TestEnv.Yaml(TestEnv.Fixture("conv_nt_draws.npy"));
        var r = TestEnv.Run(TestEnv.FixturePipeline($$"""
              - { id: sg, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 4, noise_level: 0.1, clean_last: true, noise_file: {{draws}} } }
              - { id: one, uses: noise-tunnel, with: { inner: { uses: saliency, with: { abs: false } }, samples: 1, clean_last: true } }
              - { id: grad, uses: saliency, with: { abs: false } }
              - { id: occ, uses: occlusion, with: { convention: zennit } }
              - { id: inv, uses: occlusion, with: { convention: zennit, window: 6, stride: 5, invert: true } }
            """, batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        TechniqueTests.Close(TechniqueTests.Stack(r, "sg", "noise-tunnel"), "zennit_smoothgrad_cnn.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "occ", "occlusion"), "zennit_occlusion_cnn.npy", 1e-5);
        TechniqueTests.Close(TechniqueTests.Stack(r, "inv", "occlusion"), "zennit_occlusion_invert_cnn.npy", 1e-5);
        // Zennit: SmoothGrad with n_iter = 1 is the gradient.
        Assert.True(TestEnv.RelL2(TechniqueTests.Stack(r, "one", "noise-tunnel"), TechniqueTests.Stack(r, "grad", "saliency")) < 1e-6);
    }

    [Fact]
    public void ZennitOptionsAreRefusedOutsideTheirConvention()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: inv, uses: occlusion, with: { invert: true } }
              - { id: box, uses: occlusion, with: { convention: zennit, window: [1, 8, 8] } }
            """));
        Assert.NotEqual(0, r.ExitCode);
        var all = string.Join("\n", r.Errors);
        Assert.Contains("convention: zennit", all);
        Assert.Contains("give the window as one value or [height, width]", all);
    }
}
