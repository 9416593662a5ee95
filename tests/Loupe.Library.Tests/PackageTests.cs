using System.Diagnostics;
using Loupe.Testing;

namespace Loupe.Library.Tests;

/// <summary>The library as an application outside the repository meets it: the packed Loupe.Library package (the
/// library, the host and the standard plugins) from a local folder feed, built into the console sample
/// (samples/Library/Packaged). In the "library" collection: its in-process explain must not overlap the tests that count
/// live tensors (ExplorerJobsTests), which read a process-wide counter.</summary>
[Collection("library")]
public class PackageTests
{
    static string Sample(string p) => Path.Combine(RepoPaths.Root, "samples", p);

    [Fact]
    public async Task TheConsoleSampleBuildsAgainstThePackedLibraryAndExplainsAsTheLibraryDoes()
    {
        var work = RepoPaths.TempDir("loupe-package"); // under /tmp: no Directory.Build.props of the repository applies
        var feed = Path.Combine(work, "feed");
        // A version of its own, so that the NuGet cache never serves an older pack to this test.
        var version = $"0.1.0-test.{Guid.NewGuid():N}";
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        try
        {
            HostRuns.Dotnet(work, "pack", Path.Combine(RepoRoot("core", "Loupe.Abstractions", "Loupe.Abstractions.csproj")),
                "-c", RepoPaths.Configuration, "--no-build", "-o", feed, $"-p:PackageVersion={version}");
            HostRuns.Dotnet(work, "pack", RepoRoot("core", "Loupe.Library", "Loupe.Library.csproj"),
                "-c", RepoPaths.Configuration, "-o", feed, "-p:LoupePack=true", $"-p:PackageVersion={version}");
            var package = Path.Combine(feed, $"Loupe.Library.{version}.nupkg");
            using (var zip = System.IO.Compression.ZipFile.OpenRead(package))
            {
                var entries = zip.Entries.Select(e => e.FullName).ToList();
                Assert.Contains("lib/net10.0/Loupe.Library.dll", entries);
                Assert.Contains("lib/net10.0/Loupe.Core.dll", entries);        // the host travels inside the package
                Assert.Contains("plugins/Loupe.Analysis.Cam/Loupe.Analysis.Cam.dll", entries);
                Assert.Contains("plugins/Loupe.Models.TorchSharp/Loupe.Models.TorchSharp.dll", entries);
                Assert.Contains("buildTransitive/Loupe.Library.targets", entries);
                Assert.DoesNotContain(entries, e => e.StartsWith("plugins/", StringComparison.Ordinal) && e.EndsWith("/TorchSharp.dll", StringComparison.Ordinal)); // the application's, never a copy
                using var nuspec = new StreamReader(zip.GetEntry("Loupe.Library.nuspec")!.Open());
                var text = nuspec.ReadToEnd();
                Assert.Contains($"id=\"Loupe.Abstractions\" version=\"{version}\"", text);
                Assert.DoesNotContain("id=\"Loupe.Core\"", text);
            }

            var app = Path.Combine(work, "app");
            Directory.CreateDirectory(app);
            File.Copy(Sample("Library/Packaged/Loupe.Samples.Packaged.csproj"), Path.Combine(app, "Loupe.Samples.Packaged.csproj"));
            File.Copy(Sample("Library/Console/Program.cs"), Path.Combine(app, "Program.cs"));
            HostRuns.Dotnet(app, "build", "-c", "Release", $"-p:LoupeVersion={version}", $"-p:RestoreAdditionalProjectSources={feed}");
            var bin = Path.Combine(app, "bin", "Release", "net10.0");
            Assert.True(File.Exists(Path.Combine(bin, "plugins", "Loupe.Analysis.Cam", "Loupe.Analysis.Cam.dll")), "the package copies its plugins beside the application");

            var output = Path.Combine(work, "cam.png");
            var image = Sample("images/fashion/00009-sneaker.png");
            var psi = new ProcessStartInfo("dotnet", [Path.Combine(bin, "Loupe.Samples.Packaged.dll"), image, output]) { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["LOUPE_SAMPLES"] = Sample("");
            psi.Environment["OMP_NUM_THREADS"] = "1";
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            Assert.True(p.WaitForExit(120_000));
            Assert.True(p.ExitCode == 0, await stderr);
            var lines = (await stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(6, lines.Length);
            Assert.StartsWith("sneaker", lines[0]);

            // The same Grad-CAM overlay as the library in this process, byte for byte.
            using var model = LoupeModel.Load("torchvision",
                new { architecture = "fashion-cnn", weights = Sample("models/fashion-cnn/fashion-cnn.safetensors") },
                new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins], Threads = 1, Labels = Sample("models/fashion-cnn/labels.txt") });
            Assert.Equal(model.Explain("grad-cam", image, new { layer = "relu3" }).Overlay().ToPng(), File.ReadAllBytes(output));
        }
        finally
        {
            // The application's folder carries libtorch (hundreds of MB): never left behind.
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
            foreach (var id in new[] { "loupe.library", "loupe.abstractions" })
                if (Directory.Exists(Path.Combine(cache, id, version))) Directory.Delete(Path.Combine(cache, id, version), recursive: true);
        }
    }

    static string RepoRoot(params string[] parts) => Path.Combine([RepoPaths.Root, .. parts]);
}
