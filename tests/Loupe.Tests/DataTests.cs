using Loupe.Abstractions;
using Loupe.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Data sources: exact preprocessing, streaming, and errors that name the file.</summary>
public class DataTests
{
    static readonly InputSpec Grey28 = new(1, 28, 28, [0.5f], [0.25f]);

    [Fact]
    public void IdxStreamsGzipWithOffsetLimitAndLabels()
    {
        var img = Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz");
        var lab = Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-labels-idx1-ubyte.gz");
        using var src = new IdxAdapter().Open(new IdxOptions { Images = img, Labels = lab, Offset = 10, Limit = 7 }, new DataOpenContext("/", Grey28));
        Assert.Equal(7, src.Count);
        var batches = src.Read(Grey28, 3, default).ToList();
        Assert.Equal([3, 3, 1], batches.Select(b => b.Ids.Length));
        Assert.Equal("00010", batches[0].Ids[0]);
        // Independent decode of item 12: raw bytes / 255.
        using var s = IdxAdapter.OpenStream(img);
        var all = new byte[16 + 500 * 784];
        s.ReadExactly(all);
        var expected = all.Skip(16 + 12 * 784).Take(784).Select(b => b / 255f).ToArray();
        Assert.Equal(expected, batches[0].Pixels[2].flatten().ToArray<float>());
        Assert.NotNull(batches[0].Labels);
        foreach (var b in batches) b.Dispose();
    }

    [Fact]
    public void IdxErrorsNameTheFile()
    {
        var dir = TestEnv.TempDir();
        var bad = Path.Combine(dir, "bad-idx");
        File.WriteAllBytes(bad, [0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]);
        var e = Assert.Throws<LoupeException>(() => new IdxAdapter().Open(new IdxOptions { Images = bad }, new DataOpenContext("/", Grey28)));
        Assert.Contains(bad, e.Message);
        Assert.Contains("truncated", e.Message);
        File.WriteAllBytes(bad, [1, 2, 3, 4]);
        Assert.Contains("not an IDX file", Assert.Throws<LoupeException>(() => new IdxAdapter().Open(new IdxOptions { Images = bad }, new DataOpenContext("/", Grey28))).Message);
    }

    [Fact]
    public void ImageFolderPreprocessingIsExact()
    {
        var dir = TestEnv.TempDir();
        var rgb = new InputSpec(3, 4, 4, [0, 0, 0], [1, 1, 1]);
        var px = new byte[4 * 4 * 3];
        for (int i = 0; i < px.Length; i++) px[i] = (byte)(i * 5);
        using (var img = Image.LoadPixelData<Rgb24>(px, 4, 4)) img.SaveAsPng(Path.Combine(dir, "a.png"));
        using var src = new ImageFolderAdapter().Open(new ImageFolderOptions { Path = dir }, new DataOpenContext(dir, rgb));
        var batch = src.Read(rgb, 8, default).Single();
        Assert.Equal(["a.png"], batch.Ids);
        var t = batch.Pixels[0];
        // Channel-planar, value / 255, no resampling at the native size.
        Assert.Equal(px[(1 * 4 + 2) * 3 + 1] / 255f, t[1, 1, 2].item<float>());
        Assert.Equal(px[(3 * 4 + 0) * 3 + 2] / 255f, t[2, 3, 0].item<float>());
        batch.Dispose();
    }

    [Fact]
    public void OversizedImagesAreRefusedBeforeDecoding()
    {
        var dir = TestEnv.TempDir();
        using (var img = new Image<L8>(300, 300)) img.SaveAsPng(Path.Combine(dir, "big.png"));
        var e = Assert.Throws<LoupeException>(() => new ImageFolderAdapter().Open(new ImageFolderOptions { Path = dir }, new DataOpenContext(dir, Grey28) { MaxImagePixels = 10_000 }));
        Assert.Contains("big.png", e.Message);
        Assert.Contains("over the limit", e.Message);
    }

    [Fact]
    public void NpyRoundTripAndShapeChecks()
    {
        var dir = TestEnv.TempDir();
        var path = Path.Combine(dir, "x.npy");
        var data = Enumerable.Range(0, 2 * 784).Select(i => i * 0.001f).ToArray();
        File.WriteAllBytes(path, Npy.Encode(new NdArray(data, [2, 1, 28, 28])));
        Assert.Equal(data, Npy.Read(path).Data);
        using var src = new NpyDataAdapter().Open(new NpyDataOptions { Path = path }, new DataOpenContext(dir, Grey28));
        Assert.True(src.Preprocessed);
        var b = src.Read(Grey28, 5, default).Single();
        Assert.Equal(data, b.Pixels.flatten().ToArray<float>());
        b.Dispose();
        var e = Assert.Throws<LoupeException>(() => new NpyDataAdapter().Open(new NpyDataOptions { Path = path }, new DataOpenContext(dir, new InputSpec(3, 28, 28, [0, 0, 0], [1, 1, 1]))));
        Assert.Contains("does not match the model input N×3×28×28", e.Message);
        File.WriteAllBytes(path, Npy.Encode(new NdArray(data, [2, 1, 28, 28]))[..200]);
        Assert.Contains("truncated", Assert.Throws<LoupeException>(() => new NpyDataAdapter().Open(new NpyDataOptions { Path = path }, new DataOpenContext(dir, Grey28))).Message);
    }
}
