using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Loupe.Build;
using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The TorchSharp compatibility step (build/NativeCompat.cs) — its ELF logic and its effect on the build output.</summary>
public class NativeCompatTests
{
    static string OutputLib => Directory.GetFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).First();

    static string? PackageLib()
    {
        var home = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var dir = Path.Combine(home, "torchsharp");
        return Directory.Exists(dir) ? Directory.GetFiles(dir, "libLibTorchSharp.so", SearchOption.AllDirectories).FirstOrDefault(f => f.Contains("linux-x64")) : null;
    }

    /// <summary>The package's libLibTorchSharp.so (as shipped) and a fresh copy of it to patch, or null when the packages are elsewhere.</summary>
    static (string Original, string Copy)? CopyOfPackageLib()
    {
        var original = PackageLib();
        if (original is null) return null;
        var copy = Path.Combine(TestEnv.TempDir(), "lib.so");
        File.Copy(original, copy);
        return (original, copy);
    }

    [Fact]
    public void TorchSharpLoadsAndComputesInThisProcess()
    {
        using var a = tensor(new float[] { 1, 2, 3 });
        Assert.Equal(14f, (a * a).sum().item<float>());
    }

    [Fact]
    public void OutputLibraryIsPatchedExactlyWhenTheSystemNeedsIt()
    {
        if (!OperatingSystem.IsLinux()) return;
        var sys = ElfCompat.FindSystemLibStdCxx();
        Assert.NotNull(sys);
        bool needed = !ElfCompat.LibraryHasVersion(sys!, ElfCompat.MissingVersion);
        var (requires, weak) = ElfCompat.InspectVersionNeed(OutputLib, ElfCompat.MissingVersion);
        Assert.True(requires, "TorchSharp 0.107 requires GLIBCXX_3.4.32; the check should find it");
        Assert.Equal(needed, weak);
        Assert.Equal(needed, ElfCompat.MentionsShim(OutputLib));
        Assert.Equal(needed, File.Exists(Path.Combine(Path.GetDirectoryName(OutputLib)!, ElfCompat.ShimName)));
    }

    [Fact]
    public void MakeVersionWeakFlipsOnlyTheFlagOnACopy()
    {
        if (CopyOfPackageLib() is not (string original, string copy)) return; // packages restored elsewhere: covered by the output tests
        Assert.Equal((true, false), ElfCompat.InspectVersionNeed(copy, ElfCompat.MissingVersion));
        var before = File.ReadAllBytes(copy);
        Assert.True(ElfCompat.MakeVersionWeak(copy, ElfCompat.MissingVersion));
        var after = File.ReadAllBytes(copy);
        Assert.Equal((true, true), ElfCompat.InspectVersionNeed(copy, ElfCompat.MissingVersion));
        Assert.Equal(1, before.Zip(after).Count(p => p.First != p.Second)); // one byte: the flags field
        Assert.False(ElfCompat.MakeVersionWeak(copy, "GLIBCXX_9.9.9"));
    }

    [Fact]
    public void VersionDetectionReadsTheLibraryItself()
    {
        var fake = Path.Combine(TestEnv.TempDir(), "libstdc++.so.6");
        File.WriteAllBytes(fake, [.. "\u007fELF padding GLIBCXX_3.4.30\0GLIBCXX_3.4.32\0"u8]);
        Assert.True(ElfCompat.LibraryHasVersion(fake, "GLIBCXX_3.4.32"));
        Assert.False(ElfCompat.LibraryHasVersion(fake, "GLIBCXX_3.4.3"));
        Assert.Throws<InvalidDataException>(() => ElfCompat.InspectVersionNeed(fake, "GLIBCXX_3.4.32"));
    }

    [DllImport("LibTorchSharp")] static extern double THSTorch_scalar_to_float64(IntPtr scalar);
    [DllImport("LibTorchSharp")] static extern sbyte THSTorch_scalar_type(IntPtr scalar);

    static IntPtr HandleOf(Scalar s) =>
        (IntPtr)typeof(Scalar).GetProperty("Handle", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(s)!;

    [Fact]
    public void ScalarReleaseIsRoutedThroughTheShim()
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.Null(ElfCompat.DynamicSymbolValue(OutputLib, ScalarRelease.Symbol));
        Assert.NotNull(ElfCompat.DynamicSymbolValue(OutputLib, ElfCompat.HiddenName(ScalarRelease.Symbol)));
        Assert.True(ElfCompat.Mentions(OutputLib, ScalarRelease.ShimName));
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(OutputLib)!, ScalarRelease.ShimName)));
    }

    /// <summary>The race TorchSharp leaves open: a temporary Scalar's finalizer frees the native scalar while libtorch is about to
    /// read it. Here the read comes after the release and after new scalars were made (which take a freed 32-byte block at
    /// once under glibc's allocator): the released scalar must still read as itself.</summary>
    [Fact]
    public void AReleasedScalarStaysReadableForAWhile()
    {
        if (!OperatingSystem.IsLinux()) return;
        var s = 3.25.ToScalar();
        var handle = HandleOf(s);
        s.Dispose();
        var fresh = Enumerable.Range(0, 64).Select(i => ((double)i).ToScalar()).ToList();
        // c10::Scalar as libLibTorchSharp 0.107 builds it: tag at 0 (0 = double), value at 16. Read raw first: a freed block
        // has allocator links there, and libtorch would throw "Unknown scalar type" across the P/Invoke and end the process.
        Assert.Equal(0, Marshal.ReadInt32(handle));
        Assert.Equal(3.25, BitConverter.Int64BitsToDouble(Marshal.ReadInt64(handle, 16)));
        Assert.Equal((sbyte)ScalarType.Float64, THSTorch_scalar_type(handle));
        Assert.Equal(3.25, THSTorch_scalar_to_float64(handle));
        Assert.DoesNotContain(fresh, f => HandleOf(f) == handle);
        foreach (var f in fresh) f.Dispose();
    }

    /// <summary>Deferred is not leaked: millions of released scalars hold at most the shim's two queues.</summary>
    [Fact]
    public void DeferredScalarReleaseKeepsMemoryFlat()
    {
        if (!OperatingSystem.IsLinux()) return;
        static long Rss() { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); using var p = Process.GetCurrentProcess(); return p.WorkingSet64; }
        for (int i = 0; i < 2 * ScalarRelease.Capacity; i++) i.ToScalar().Dispose();   // queues at their steady size
        long before = Rss();
        const int n = 4_000_000;                                                        // leaked: ≥ 4 M × 48 B = 192 MB
        for (int i = 0; i < n; i++) ((double)i).ToScalar().Dispose();
        long grown = Rss() - before;
        Assert.True(grown < 64L << 20, $"process grew by {grown >> 20} MB over {n} scalar releases");
    }

    [Fact]
    public void HideDynamicSymbolRenamesOneByteOnACopy()
    {
        if (CopyOfPackageLib() is not (string original, string copy)) return; // packages restored elsewhere: covered by the output tests
        var value = ElfCompat.DynamicSymbolValue(copy, ScalarRelease.Symbol);
        Assert.NotNull(value);
        Assert.Null(ElfCompat.DynamicSymbolValue(copy, ElfCompat.HiddenName(ScalarRelease.Symbol)));
        var before = File.ReadAllBytes(copy);
        Assert.True(ElfCompat.HideDynamicSymbol(copy, ScalarRelease.Symbol));
        var after = File.ReadAllBytes(copy);
        Assert.Equal(1, before.Zip(after).Count(p => p.First != p.Second));
        Assert.Null(ElfCompat.DynamicSymbolValue(copy, ScalarRelease.Symbol));
        Assert.Equal(value, ElfCompat.DynamicSymbolValue(copy, ElfCompat.HiddenName(ScalarRelease.Symbol)));
        Assert.Equal(ElfCompat.DynamicSymbolValue(original, ScalarRelease.Anchor), ElfCompat.DynamicSymbolValue(copy, ScalarRelease.Anchor));
        Assert.False(ElfCompat.HideDynamicSymbol(copy, ScalarRelease.Symbol));
    }
}
