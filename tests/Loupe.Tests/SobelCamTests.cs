namespace Loupe.Tests;

/// <summary>sobel-cam against pytorch-grad-cam's sobel_cam run with OpenCV itself (tests/fixtures/make_sobel_fixtures.py):
/// the same uint8 values, pixel for pixel, on grey and RGB inputs.</summary>
public class SobelCamTests
{
    static void Equal(float[] actual, string fixture)
    {
        var expected = Npy.Read(TestEnv.Fixture(fixture)).Data;
        Assert.Equal(expected.Length, actual.Length);
        int wrong = Enumerable.Range(0, expected.Length).Count(i => actual[i] != expected[i]);
        Assert.True(wrong == 0, $"{fixture}: {wrong} of {expected.Length} values differ");
        Assert.True(expected.Max() > 100, "the edge maps are not flat");
    }

    [Fact]
    public void GreyInputsGiveOpenCvsEdgeMap()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("  - { id: s, uses: sobel-cam }\n", batchSize: 3));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Equal(TechniqueTests.Stack(r, "s", "sobel-cam"), "sobel_fashion.npy");
    }

    [Fact]
    public void RgbInputsAreGreyedAsOpenCvGreysThem()
    {
        var r = ShapleyFamilyTests.ResNet18("  - { id: s, uses: sobel-cam }");
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        Equal(TechniqueTests.Stack(r, "s", "sobel-cam", 2), "sobel_arch64.npy");
    }
}
