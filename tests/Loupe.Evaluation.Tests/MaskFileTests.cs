using System.Buffers.Binary;
using Loupe.Abstractions;
using System.Text;

namespace Loupe.Evaluation.Tests;

/// <summary>Hostile files in a metric's <c>masks:</c> folder (issue 22, security): each one fails its step with an
/// error that names the file, without decoding it, blocking on it or exhausting memory.</summary>
public class MaskFileTests
{
    static Loupe.Core.RunResult RunWith(string masks) => Env.Run($$"""
        version: 1
        model: { uses: region-test }
        data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "inputs.npy"))}} } }
        settings: { batch_size: 4 }
        steps:
          - { id: rnd, uses: random-map }
          - { id: auc, uses: auc, with: { of: rnd, masks: {{Env.Yaml(masks)}} } }
        """);

    static string Error(Loupe.Core.RunResult r)
    {
        Assert.NotEqual(0, r.ExitCode);
        var step = r.Manifest!["steps"]!.AsArray().First(s => (string?)s!["id"] == "auc")!;
        Assert.Equal("failed", (string?)step["status"]);
        return (string)step["error"]!;
    }

    static uint Crc(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }

    /// <summary>A PNG whose header declares <paramref name="w"/>×<paramref name="h"/> grey pixels, with
    /// <paramref name="grey"/> (row-major bytes) as its image data when given, else one row only (truncated).</summary>
    static byte[] PngHeader(int w, int h, byte[]? grey = null)
    {
        var png = new List<byte>([0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10]);
        void Chunk(string type, byte[] body)
        {
            var len = new byte[4]; BinaryPrimitives.WriteInt32BigEndian(len, body.Length);
            var typed = Encoding.ASCII.GetBytes(type).Concat(body).ToArray();
            var crc = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(crc, Crc(typed));
            png.AddRange(len); png.AddRange(typed); png.AddRange(crc);
        }
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, w);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = 8;   // bit depth; colour type 0 (grey), deflate, no filter, no interlace
        Chunk("IHDR", ihdr);
        // Image data: every row of grey, else only the first row of a black image (a decoder must reach the data
        // chunk to read the header, so even the refused files carry one).
        using (var z = new MemoryStream())
        {
            using (var zs = new System.IO.Compression.ZLibStream(z, System.IO.Compression.CompressionLevel.Optimal))
                for (int y = 0; y < (grey is null ? 1 : h); y++) { zs.WriteByte(0); zs.Write(grey ?? new byte[w], grey is null ? 0 : y * w, w); }   // filter 0 per row
            Chunk("IDAT", z.ToArray());
        }
        Chunk("IEND", []);
        return png.ToArray();
    }

    static string Folder(string name, Action<string> fill)
    {
        var dir = Path.Combine(Env.TempDir(), name);
        Directory.CreateDirectory(dir);
        fill(dir);
        return dir;
    }

    [Fact]
    public void APngMaskReadsAsTheSameNpyMask()
    {
        var grey = new byte[28 * 28];
        var region = new float[28 * 28];
        for (int y = 4; y < 12; y++) for (int x = 6; x < 20; x++) { grey[y * 28 + x] = 200; region[y * 28 + x] = 1; }
        var png = Folder("png", d => { for (int i = 0; i < 4; i++) File.WriteAllBytes(Path.Combine(d, $"{i:D5}.png"), PngHeader(28, 28, grey)); });
        var npy = Folder("npy", d => { for (int i = 0; i < 4; i++) File.WriteAllBytes(Path.Combine(d, $"{i:D5}.npy"), Npy.Encode(new NdArray(region, [28, 28]))); });
        var a = RunWith(png);
        var b = RunWith(npy);
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0, string.Join("\n", a.Errors.Concat(b.Errors)));
        Assert.Equal(Env.Metric(b, "auc", "auc_mean"), Env.Metric(a, "auc", "auc_mean"));
        Assert.True(Env.Metric(a, "auc", "auc_mean") is > 0 and < 1);
    }

    [Fact]
    public void ADecompressionBombIsRefusedFromItsHeader()
    {
        var dir = Folder("bomb", d => File.WriteAllBytes(Path.Combine(d, "00000.png"), PngHeader(60_000, 60_000)));
        var e = Error(RunWith(dir));
        Assert.Contains("00000.png", e);
        Assert.Contains("60000×60000 = 3600000000 pixels, over the limit of 67108864", e);
    }

    [Fact]
    public void AnOversizedFileIsRefusedWithoutReadingItAll()
    {
        var dir = Folder("big", d =>
        {
            using var f = File.Create(Path.Combine(d, "00000.png"));
            f.SetLength(Loupe.Analysis.Evaluation.ObjectMasks.MaxMaskBytes + 1);   // sparse: no disk used
        });
        var e = Error(RunWith(dir));
        Assert.Contains("00000.png", e);
        Assert.Contains($"file is larger than {Loupe.Analysis.Evaluation.ObjectMasks.MaxMaskBytes} bytes; refused", e);
    }

    [Fact]
    public void GarbageAndTruncatedImagesNameTheFile()
    {
        var junk = Folder("junk", d => File.WriteAllBytes(Path.Combine(d, "00000.png"), Encoding.ASCII.GetBytes("<svg>not a png</svg>")));
        var e = Error(RunWith(junk));
        Assert.Contains("00000.png: not a readable image", e);
        // A valid header with one row of pixel data behind it.
        var cut = Folder("cut", d => File.WriteAllBytes(Path.Combine(d, "00000.png"), PngHeader(28, 28)));
        e = Error(RunWith(cut));
        Assert.Contains("00000.png", e);
    }

    [Fact]
    public void AFifoIsRefusedBeforeItIsOpened()
    {
        if (OperatingSystem.IsWindows()) return;   // no FIFOs there; the other hostile files are covered above
        var dir = Folder("fifo", d =>
        {
            using var p = System.Diagnostics.Process.Start("mkfifo", Path.Combine(d, "00000.npy"))!;
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
        });
        var e = Error(RunWith(dir));
        Assert.Contains("00000.npy", e);
        Assert.Contains("FIFO", e, StringComparison.OrdinalIgnoreCase);
    }
}
