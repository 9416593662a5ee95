using System.Diagnostics;

namespace Loupe.Onnx.Tests;

/// <summary>Opt-in, outside the default suite (compiled only with <c>-p:LoupeFullFamilies=true</c>:
/// <c>dotnet test tests/Loupe.Onnx.Tests -c Release -p:LoupeFullFamilies=true --filter FullFamilyTests</c>): exports the full-size torchvision models (vit_b_16, swin_t,
/// convnext_tiny, ... random weights; needs /usr/bin/python3 with torch 1.13 / torchvision 0.14) with
/// make_family_fixtures.py --full into LOUPE_FULL_FAMILIES_DIR (default: a temporary folder; existing exports are
/// reused) and compares the onnx backend's logits and input gradients with PyTorch's, as FamilyTests does for the
/// small variants. Takes several minutes and ~1.5 GB of disk.</summary>
public class FullFamilyTests
{
    const string Flag = "LOUPE_FULL_FAMILIES";

    [Fact]
    public void FullSizeFamiliesMatchPyTorch()
    {
        var dir = Environment.GetEnvironmentVariable(Flag + "_DIR") is { Length: > 0 } d ? d : Path.Combine(Loupe.Testing.TestTemp.Machine, "loupe-full-families");
        Directory.CreateDirectory(dir);
        if (!Directory.EnumerateFiles(dir, "*.onnx").Any())
        {
            var psi = new ProcessStartInfo("/usr/bin/python3", [Path.Combine(Env.FixtureRoot, "make_family_fixtures.py"), "--full", dir])
            { RedirectStandardError = true, RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            var output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"export failed ({p.ExitCode}): {output}\n{err.Result}");
        }
        var failures = new List<string>();
        foreach (var f in Directory.GetFiles(dir, "*.onnx").Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileNameWithoutExtension(f);
            try { FamilyTests.Compare(f, FamilyTests.Reference.Read(dir, name), name); }
            catch (Exception e) { failures.Add($"{name}: {e.Message.Split('\n')[0]}"); }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }
}
