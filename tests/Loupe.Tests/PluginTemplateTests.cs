using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>The plugin SDK as a third-party author meets it: the packed Loupe.Abstractions package and
/// <c>loupe new plugin</c>, outside the solution.</summary>
public class PluginTemplateTests
{
    [Fact]
    public void APluginFromTheTemplateBuildsAgainstThePackedSdkAndRunsFromAPipeline()
    {
        var work = TestEnv.TempDir("loupe-template"); // under /tmp: no Directory.Build.props of the repository applies
        var feed = Path.Combine(work, "feed");
        // A version of its own, so the NuGet cache never serves an older pack of the SDK to this test.
        var version = $"{LoupeContract.Version}.0.0-test.{Guid.NewGuid():N}";
        var cached = Path.Combine(Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"), "loupe.abstractions", version);
        try
        {
            Dotnet(work, "pack", Path.Combine(TestEnv.RepoRoot, "core", "Loupe.Abstractions", "Loupe.Abstractions.csproj"),
                "-c", TestEnv.Configuration, "--no-build", "-o", feed, $"-p:PackageVersion={version}");
            var package = Path.Combine(feed, $"Loupe.Abstractions.{version}.nupkg");
            Assert.True(File.Exists(package));
            using (var zip = System.IO.Compression.ZipFile.OpenRead(package))
            {
                var entries = zip.Entries.Select(e => e.FullName).ToList();
                Assert.Contains("lib/net10.0/Loupe.Abstractions.dll", entries);
                Assert.Contains("lib/net10.0/Loupe.Abstractions.xml", entries); // XML docs for IntelliSense
                Assert.Contains("build/Loupe.Abstractions.targets", entries);
            }

            var (code, stdout, stderr) = TestEnv.Cli(work, "new", "plugin", "Acme.SharpSaliency", "--feed", feed);
            Assert.True(code == 0, stdout + stderr);
            var root = Path.Combine(work, "Acme.SharpSaliency");
            Assert.True(File.Exists(Path.Combine(root, "Acme.SharpSaliency", "SharpSaliency.cs")));

            // The generated tests pass (this also builds the plugin), then a Release build for the pipeline.
            var test = Dotnet(root, "test", "-c", "Release", $"-p:LoupeSdkVersion={version}");
            Assert.Contains("Passed!", test);
            var bin = Path.Combine(root, "Acme.SharpSaliency", "bin", "Release", "net10.0");
            Assert.False(File.Exists(Path.Combine(bin, "TorchSharp.dll")), "the plugin must not carry TorchSharp");
            Assert.False(File.Exists(Path.Combine(bin, "Loupe.Abstractions.dll")), "the plugin must not carry the SDK");

            // Run from a pipeline through the CLI, beside the built-in saliency: on the one-channel demo CNN,
            // |∂y/∂x|² summed over channels is saliency squared.
            var pipeline = TestEnv.FixturePipeline("""
                  - id: sharp
                    uses: sharp-saliency
                    with: { power: 2 }
                  - id: saliency
                    uses: saliency
                """, bin);
            var outDir = Path.Combine(Path.GetDirectoryName(pipeline)!, "out");
            (code, stdout, stderr) = TestEnv.Cli(work, "run", pipeline, "--out", outDir);
            Assert.True(code == 0, stdout + stderr);
            var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
            var raws = manifest["artifacts"]!.AsArray().Where(a => a!["kind"]!.GetValue<string>() == "raw").ToList();
            var sharp = raws.Where(a => a!["step"]!.GetValue<string>() == "sharp").ToList();
            Assert.Equal(4, sharp.Count);
            foreach (var a in sharp)
            {
                var s = raws.Single(r => r!["step"]!.GetValue<string>() == "saliency" && r["input"]!.GetValue<string>() == a!["input"]!.GetValue<string>());
                var mine = Npy.Read(Path.Combine(outDir, a!["path"]!.GetValue<string>())).Data;
                var reference = Npy.Read(Path.Combine(outDir, s!["path"]!.GetValue<string>())).Data.Select(v => v * v).ToArray();
                Assert.True(TestEnv.RelL2(mine, reference) < 1e-5);
            }

            // Name clashes and bad names: clear errors, nothing written.
            (code, _, stderr) = TestEnv.Cli(work, "new", "plugin", "Acme.SharpSaliency");
            Assert.Equal(2, code);
            Assert.Contains("already exists", stderr);
            (code, _, stderr) = TestEnv.Cli(work, "new", "plugin", "Saliency");
            Assert.Equal(2, code);
            Assert.Contains("'saliency'", stderr);
            Assert.Contains("already registered by Loupe.Analysis.Decisions", stderr);
            (code, _, stderr) = TestEnv.Cli(work, "new", "plugin", "my-plugin");
            Assert.Equal(2, code);
            Assert.Contains("not valid", stderr);
            Assert.False(Directory.Exists(Path.Combine(work, "Saliency")) || Directory.Exists(Path.Combine(work, "my-plugin")));
        }
        finally
        {
            if (Directory.Exists(cached)) Directory.Delete(cached, true);
        }
    }

    static string Dotnet(string workingDirectory, params string[] args) => Loupe.Testing.HostRuns.Dotnet(workingDirectory, args);
}
