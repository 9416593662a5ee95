using Loupe.Build;
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
        var original = PackageLib();
        if (original is null) return; // packages restored elsewhere: covered by the output test above
        var copy = Path.Combine(TestEnv.TempDir(), "lib.so");
        File.Copy(original, copy);
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
}
