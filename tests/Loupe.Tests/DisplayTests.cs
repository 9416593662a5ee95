using Loupe.Abstractions;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>Display images and tensor copies: the span code against the tensor expressions it replaced.</summary>
public class DisplayTests
{
    /// <summary>The overlay as one tensor expression (the implementation before the span one): min-max per map,
    /// viridis[round(255 m)] / 255, blend over clamp(bg), round to bytes.</summary>
    static byte[] Reference(Tensor pixels, Tensor maps, float alpha)
    {
        using var scope = NewDisposeScope();
        long n = pixels.shape[0], h = pixels.shape[2], w = pixels.shape[3];
        var m = maps.shape[1] == h && maps.shape[2] == w ? maps : Display.Resize(maps, h, w);
        var flat = m.reshape(n, -1);
        var min = flat.amin([1], keepdim: true);
        var range = flat.amax([1], keepdim: true) - min;
        var scaled = where(range > 0, (flat - min) / range.clamp_min(1e-30f), zeros_like(flat));
        var idx = (scaled * 255).round().to(ScalarType.Int64).flatten();
        var lut = tensor(Display.Viridis.ToArray()).view(256, 3).to(ScalarType.Float32) / 255f;
        var heat = lut.index_select(0, idx).view(n, h, w, 3);
        var bg = (pixels.shape[1] == 1 ? pixels.expand(-1, 3, -1, -1) : pixels).permute(0, 2, 3, 1);
        var rgb = ((bg.clamp(0, 1) * (1 - (double)alpha) + heat * (double)alpha) * 255).round().to(ScalarType.Byte).contiguous();
        var bytes = new byte[rgb.numel()];
        long k = 0;
        foreach (var b in rgb.data<byte>()) bytes[k++] = b;   // element by element on purpose: independent of TensorData
        return bytes;
    }

    [Theory]
    [InlineData(3, 224, 224, 224)]   // maps at input resolution
    [InlineData(3, 64, 48, 7)]       // CAM-sized maps, bilinearly resized
    [InlineData(1, 28, 28, 28)]      // grey images
    [InlineData(3, 30, 27, 30)]      // 810 pixels: a tail after the last 8-pixel vector
    public void OverlaysEqualTheTensorExpressionByteForByte(int channels, int h, int w, int mapSize)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(7);
        var pixels = rand([4, channels, h, w], generator: gen) * 1.2f - 0.1f;   // some out of [0, 1]: clamped
        var maps = randn([4, mapSize, mapSize == h ? w : mapSize], generator: gen);
        maps[2].fill_(3f);                                                      // a constant map: all colour 0
        maps[1][1, 1] = float.NaN;                                              // a NaN: the whole map colour 0
        var got = Display.Overlays(pixels, maps);
        var want = Reference(pixels, maps, 0.55f);
        Assert.Equal(4, got.Length);
        int size = h * w * 3, differ = 0;
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal((w, h), (got[i].Width, got[i].Height));
            for (int p = 0; p < size; p++)
                if (got[i].Pixels[p] != want[i * size + p]) differ++;
        }
        Assert.Equal(0, differ);
    }

    [Fact]
    public void OverlayOfOneImageIsTheBatchedOverlay()
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(3);
        var pixels = rand([2, 3, 32, 40], generator: gen);
        var maps = rand([2, 8, 10], generator: gen);
        var batched = Display.Overlays(pixels, maps);
        Assert.Equal(batched[1].Pixels, Display.Overlay(pixels[1], maps[1]).Pixels);
    }

    [Fact]
    public void ColorizeUsesTheColourTable()
    {
        using var scope = NewDisposeScope();
        var img = Display.Colorize(tensor(new float[] { -2, 0, 2, 6 }).view(2, 2));
        var lut = Display.Viridis;
        // min-max: 0, 2/8, 4/8, 1 → indices 0, round(63.75) = 64, round(127.5) = 128 (ties to even), 255
        int[] expected = [0, 64, 128, 255];
        for (int p = 0; p < 4; p++)
            Assert.Equal(lut.Slice(expected[p] * 3, 3).ToArray(), img.Pixels.AsSpan(p * 3, 3).ToArray());
    }

    [Fact]
    public void TensorDataCopiesViewsAndRefusesTheWrongType()
    {
        using var scope = NewDisposeScope();
        var t = arange(0, 60, dtype: ScalarType.Float32).view(3, 4, 5);
        Assert.Equal(Enumerable.Range(20, 20).Select(v => (float)v), t[1].ToArray<float>());            // storage offset
        Assert.Equal(new float[] { 5, 25, 45, 10, 30, 50 }, t[.., 1..3, 0].t().ToArray<float>());       // strided
        Assert.Equal(new long[] { 1, 2 }, tensor(new long[] { 1, 2 }).ToArray<long>());
        Assert.Equal(new[] { true, false }, tensor(new[] { true, false }).ToArray<bool>());
        Assert.Empty(zeros(0).ToArray<float>());
        Assert.Throws<ArgumentException>(() => t.ToArray<double>());
    }

    [Fact]
    public void TensorDataFillsANewTensorFromASpan()
    {
        using var scope = NewDisposeScope();
        var values = Enumerable.Range(0, 60).Select(v => v * 0.5f).ToArray();
        var t = TensorData.FromSpan<float>(values, [3, 4, 5]);
        Assert.Equal(new long[] { 3, 4, 5 }, t.shape);
        Assert.Equal(ScalarType.Float32, t.dtype);
        Assert.Equal(values, t.ToArray<float>());
        Assert.Equal(2.5f, t[0, 1, 0].item<float>());   // C order: element (0, 1, 0) is the fifth
        Assert.Equal(new long[] { 7, -1 }, TensorData.FromSpan<long>(new long[] { 7, -1 }, [2]).ToArray<long>());
        Assert.Equal(new long[] { 0, 3 }, TensorData.FromSpan<float>(ReadOnlySpan<float>.Empty, [0, 3]).shape);
        Assert.Throws<ArgumentException>(() => TensorData.FromSpan<float>(values, [7, 9]));
        // Larger than one 1 GiB piece of a byte span: 2^28 + 16 floats copied in two pieces, both ends right.
        var big = new float[(1 << 28) + 16];
        big[0] = 1; big[^1] = 2; big[(1 << 28) - 1] = 3; big[1 << 28] = 4;
        using var copy = TensorData.FromSpan<float>(big, [big.Length]);
        Assert.Equal((1f, 2f, 3f, 4f), (copy[0].item<float>(), copy[^1].item<float>(), copy[(1 << 28) - 1].item<float>(), copy[1 << 28].item<float>()));
        Assert.Equal(10.0, copy.sum().item<float>(), 3);
    }
}
