using Loupe.Abstractions;
using Loupe.Data;

namespace Loupe.Tests;

/// <summary>Every .npy Loupe reads (data, masks, baselines, maps, side inputs…) goes through <see cref="Npy.Read"/> or,
/// streamed, <see cref="Npy.ReadFloats"/>: arrays NumPy saved in every numeric dtype, either byte order, C or Fortran
/// order (tests/fixtures/npy_dtypes, make_npy_dtype_fixtures.py) are read as NumPy's own <c>astype(np.float32)</c> of
/// them, element for element; what float32 cannot hold is refused with the file and the element.</summary>
public sealed class NpyReadTests
{
    static readonly string Folder = TestEnv.Fixture("npy_dtypes");

    static IEnumerable<string> Names() => Directory.EnumerateFiles(Folder, "*.expected.npy").Select(f => Path.GetFileName(f)[..^".expected.npy".Length]).Order();

    public static TheoryData<string> Cases() => new(Names());

    [Theory, MemberData(nameof(Cases))]
    public void ReadsWhatNumPyConvertsToFloat32(string name)
    {
        var read = Npy.Read(Path.Combine(Folder, name + ".npy"));
        var expected = Npy.Read(Path.Combine(Folder, name + ".expected.npy"));
        Assert.Equal(expected.Shape, read.Shape);
        // Bit for bit: NaN stays NaN, −0 stays −0, float64 rounds to nearest as NumPy rounds.
        Assert.Equal(expected.Data.Select(BitConverter.SingleToInt32Bits), read.Data.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void TheCasesCoverEveryDtypeAndBothOrders()
    {
        var names = Names().ToList();
        Assert.True(names.Count >= 30, string.Join(", ", names));
        foreach (var kind in new[] { "f2", "f4", "f8", "i2", "i4", "i8", "u2", "u4", "u8" })
        {
            Assert.Contains(kind + "le", names);
            Assert.Contains(kind + "be", names);
        }
        Assert.Contains("f8_fortran", names);
        Assert.Contains("b1", names);
    }

    static string Write(string name, string descr, byte[] data, string shape = "(2,)", bool fortran = false)
    {
        var dir = TestEnv.TempDir("loupe-npy");
        var header = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {shape}, }}";
        header += new string(' ', (64 - (10 + header.Length + 1) % 64) % 64) + "\n";
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, [0x93, .. "NUMPY"u8, 1, 0, (byte)header.Length, (byte)(header.Length >> 8), .. System.Text.Encoding.ASCII.GetBytes(header), .. data]);
        return path;
    }

    [Theory]
    [InlineData("<i8", 16777217L, "element 1 (16777217) is an integer beyond ±16777216")]
    [InlineData("<i8", -16777217L, "element 1 (-16777217) is an integer beyond")]
    [InlineData("<u8", 16777217L, "element 1 (16777217) is an integer beyond")]
    public void IntegersFloat32CannotHoldAreRefused(string descr, long value, string message)
    {
        var path = Write("ids.npy", descr, [.. BitConverter.GetBytes(7L), .. BitConverter.GetBytes(value)]);
        var e = Assert.Throws<LoupeException>(() => Npy.Read(path));
        Assert.Contains(message, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Float64BeyondFloat32IsRefusedAndItsInfinitiesKept()
    {
        var path = Write("big.npy", "<f8", [.. BitConverter.GetBytes(1.0), .. BitConverter.GetBytes(-4e38)]);
        Assert.Contains("element 1 (-4E+38) is beyond float32's range", Assert.Throws<LoupeException>(() => Npy.Read(path)).Message);
        var inf = Write("inf.npy", "<f8", [.. BitConverter.GetBytes(double.NegativeInfinity), .. BitConverter.GetBytes(3.4e38)]);
        Assert.Equal([float.NegativeInfinity, 3.4e38f], Npy.Read(inf).Data);
    }

    [Theory]
    [InlineData("<c8", "dtype '<c8' is not supported")]
    [InlineData("<f16", "dtype '<f16' is not supported")]
    [InlineData("<f08", "dtype '<f08' is not supported")]
    [InlineData("<U4", "dtype '<U4' is not supported")]
    [InlineData("|O", "dtype '|O' is not supported")]
    [InlineData("<M8", "dtype '<M8' is not supported")]
    public void OtherDtypesAreRefused(string descr, string message)
    {
        var path = Write("x.npy", descr, new byte[64]);
        Assert.Contains(message, Assert.Throws<LoupeException>(() => Npy.Read(path)).Message);
    }

    [Fact]
    public void ATruncatedFileIsMeasuredInItsDtypesBytes()
    {
        var path = Write("short.npy", "<f8", new byte[12], "(2,)");
        Assert.Contains("truncated: shape (2) needs 16 bytes of data, the file has 12", Assert.Throws<LoupeException>(() => Npy.Read(path)).Message);
    }

    static float[] Stream(IDataSource source, out long[]? labels)
    {
        var values = new List<float>();
        var all = new List<long>();
        bool any = false;
        foreach (var batch in source.Read(TorchVisionInput, 3, default))
        {
            values.AddRange(batch.Pixels.data<float>().ToArray());
            if (batch.Labels is { } l) { all.AddRange(l); any = true; }
            batch.Dispose();
        }
        labels = any ? [.. all] : null;
        return [.. values];
    }

    static readonly InputSpec TorchVisionInput = new(1, 28, 28, [0.2860f], [0.3530f]);

    [Fact]
    public void TheNpyDataSourceStreamsBigEndianFloat64AsTheFloat32File()
    {
        var f64 = Path.Combine(Folder, "fashion_input_f8be.npy");
        var context = new DataOpenContext(Folder, TorchVisionInput);
        using var source = new NpyDataAdapter().Open(new NpyDataOptions { Path = f64, Labels = Path.Combine(Folder, "labels_i1.npy") }, context);
        using var reference = new NpyDataAdapter().Open(new NpyDataOptions { Path = TestEnv.Fixture("fashion_input.npy") }, context);
        Assert.Equal(Stream(reference, out _), Stream(source, out var labels));
        Assert.Equal([3L, 0, 9, 1], labels!);
        // A shard's slice starts at its first row's bytes (8 per element here).
        using var slice = ((IRangeDataSource)source).Slice(1, 2);
        Assert.Equal(Stream(reference, out _).Skip(784).Take(2 * 784), Stream(slice, out var sliced));
        Assert.Equal([0L, 9], sliced!);
        // N×H×W for a one-channel model.
        using var nhw = new NpyDataAdapter().Open(new NpyDataOptions { Path = Path.Combine(Folder, "fashion_input_nhw.npy") }, context);
        Assert.Equal(Stream(reference, out _), Stream(nhw, out _));
        using var floats = new NpyDataAdapter().Open(new NpyDataOptions { Path = f64, Labels = Path.Combine(Folder, "labels_f8.npy") }, context);
        Stream(floats, out var fromFloats);
        Assert.Equal([3L, 0, 9, 1], fromFloats!);
    }

    [Fact]
    public void TheNpyDataSourceReadsAFortranOrderFileWholeAsTheCOrderOne()
    {
        // fashion_input.npy (4×1×28×28) saved as np.asfortranarray would save it: the first axis varies fastest.
        var reference = Npy.Read(TestEnv.Fixture("fashion_input.npy"));
        long[] shape = reference.Shape;
        var fortran = new float[reference.Data.Length];
        for (long n = 0, i = 0; n < shape[0]; n++)
            for (long c = 0; c < shape[1]; c++)
                for (long h = 0; h < shape[2]; h++)
                    for (long w = 0; w < shape[3]; w++, i++)
                        fortran[n + shape[0] * (c + shape[1] * (h + shape[2] * w))] = reference.Data[i];
        var path = Write("fortran.npy", "<f4", [.. fortran.SelectMany(BitConverter.GetBytes)], "(4, 1, 28, 28)", fortran: true);
        var context = new DataOpenContext(Folder, TorchVisionInput);
        using var source = new NpyDataAdapter().Open(new NpyDataOptions { Path = path }, context);
        using var cOrder = new NpyDataAdapter().Open(new NpyDataOptions { Path = TestEnv.Fixture("fashion_input.npy") }, context);
        Assert.Equal(Stream(cOrder, out _), Stream(source, out _));
        using var slice = ((IRangeDataSource)source).Slice(1, 2);
        Assert.Equal(Stream(cOrder, out _).Skip(784).Take(2 * 784), Stream(slice, out _));
    }

    [Fact]
    public void LabelsThatAreNotWholeNumbersAreRefused()
    {
        var path = Write("labels.npy", "<f8", [.. BitConverter.GetBytes(1.0), .. BitConverter.GetBytes(2.5), .. BitConverter.GetBytes(0.0), .. BitConverter.GetBytes(1.0)], "(4,)");
        var e = Assert.Throws<LoupeException>(() => new NpyDataAdapter().Open(new NpyDataOptions { Path = TestEnv.Fixture("fashion_input.npy"), Labels = path },
            new DataOpenContext(Folder, TorchVisionInput)));
        Assert.Contains("label 1 (2.5) is not a whole number", e.Message);
    }

    [Fact]
    public void AnInt64FeatureMaskAndFloat64InputsGiveTheReferenceAblation()
    {
        // Captum's masks are int64 tensors, NumPy saves float64: the run matches the PyTorch reference the float32 files match
        // (ConventionTests.FeatureAblationPerElementAndWithAMaskFile).
        var m = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, weights: {{TestEnv.Yaml(TestEnv.Fixture("fashion_cnn_seed0.pt"))}} }
            data:
              uses: npy
              with: { path: {{TestEnv.Yaml(Path.Combine(Folder, "fashion_input_f8be.npy"))}} }
            settings: { batch_size: 3 }
            steps:
              - { id: fm, uses: feature-ablation, with: { segments: mask, feature_mask: {{TestEnv.Yaml(Path.Combine(Folder, "conv_fa_mask_ids_i8.npy"))}}, fill_value: 0.5 } }
            """));
        TechniqueTests.Close(TechniqueTests.Stack(m, "fm", "feature-ablation"), "conv_fa_mask.npy", 1e-4);
    }
}
