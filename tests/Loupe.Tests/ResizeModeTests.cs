using Loupe.Abstractions;
using Loupe.Data;

namespace Loupe.Tests;

/// <summary><c>image-folder</c>'s resize modes against torchvision 0.14 on a real photo (fixtures by
/// tests/fixtures/display/make_display_fixtures.py), and its warnings about skipped files.</summary>
public class ResizeModeTests
{
    static readonly string Photo = TestEnv.Fixture("display/astronaut-224x150.png"); // 224 wide, 150 high

    [Theory]
    [InlineData("resize256_crop224", 224, null)]   // shorter side 150 → 256 (upsampling), default size 224 / 0.875
    [InlineData("resize64_crop56", 56, 64)]        // 150 → 64 (downsampling: the filter widens, as PIL's)
    public void CenterCropMatchesTorchvisionResizeThenCenterCrop(string fixture, int size, int? resizeSize)
    {
        var want = Npy.Read(TestEnv.Fixture($"display/{fixture}.npy"));
        var got = ImageDecoding.Load(Photo, new InputSpec(3, size, size, [0, 0, 0], [1, 1, 1]), 1 << 24, ImageResize.CenterCrop, resizeSize);
        Assert.Equal(want.Data.Length, got.Length);
        double sum = 0, max = 0;
        for (int i = 0; i < got.Length; i++) { var d = Math.Abs(got[i] - want.Data[i]); sum += d; max = Math.Max(max, d); }
        // PIL rounds to 8 bits between its horizontal and vertical passes, ImageSharp does not: a level or two apart.
        Assert.True(sum / got.Length < 1.5 / 255 && max <= 8 / 255.0, $"mean |diff| {sum / got.Length * 255:F2}/255, max {max * 255:F1}/255");
        // A shifted crop or a stretched image is far off: the same check fails for stretching.
        var stretched = ImageDecoding.Load(Photo, new InputSpec(3, size, size, [0, 0, 0], [1, 1, 1]), 1 << 24);
        Assert.True(stretched.Select((v, i) => Math.Abs(v - want.Data[i])).Average() > 4 * sum / got.Length);
    }

    [Fact]
    public void PadKeepsTheAspectRatioWithBlackBars()
    {
        // 224×150 into 56×56: the width fills, the height is round(150 · 56/224) = 38 (rows 9..46), black above and below.
        var got = ImageDecoding.Load(Photo, new InputSpec(3, 56, 56, [0, 0, 0], [1, 1, 1]), 1 << 24, ImageResize.Pad);
        int hw = 56 * 56;
        float Row(int y) => Enumerable.Range(0, 56).Sum(x => got[y * 56 + x] + got[hw + y * 56 + x] + got[2 * hw + y * 56 + x]);
        for (int y = 0; y < 9; y++) Assert.Equal(0f, Row(y));
        for (int y = 47; y < 56; y++) Assert.Equal(0f, Row(y));
        Assert.True(Row(9) > 0 && Row(46) > 0);
        // Inside the bars it is the photo resized to 56×38 (compared with the stretch path on that size).
        var inner = ImageDecoding.Load(Photo, new InputSpec(3, 38, 56, [0, 0, 0], [1, 1, 1]), 1 << 24);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 38; y++)
                for (int x = 0; x < 56; x++)
                    Assert.Equal(inner[c * 38 * 56 + y * 56 + x], got[c * hw + (y + 9) * 56 + x], 1e-3);
    }

    [Fact]
    public void SkippedFilesAreCountedInAWarning()
    {
        var dir = TestEnv.TempDir("skipped");
        File.Copy(Photo, Path.Combine(dir, "a.png"));
        File.WriteAllText(Path.Combine(dir, "b.png"), "not an image");
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "a note");
        var warnings = new List<string>();
        using var src = new ImageFolderAdapter().Open(new ImageFolderOptions { Path = dir, OnError = OnError.Skip },
            new DataOpenContext(dir, new InputSpec(3, 8, 8, [0, 0, 0], [1, 1, 1])) { Warn = warnings.Add });
        Assert.Equal(1, src.Count);
        Assert.Contains(warnings, w => w.Contains("1 of 2 files skipped"));
        Assert.Contains(warnings, w => w.Contains("1 files") && w.Contains("not images by their extension"));
    }
}
