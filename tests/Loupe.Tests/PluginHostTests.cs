using System.Diagnostics;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Plugin discovery and isolation, with the third-party sample plugin built the way its author would.</summary>
public class PluginHostTests
{
    static readonly Lazy<string> SamplePlugin = new(() => BuildSample(null));
    static readonly Lazy<string> SamplePluginV99 = new(() => BuildSample(99));

    /// <summary>Builds samples/ThirdPartyPlugin into a temp folder, as its author would (the host never references it).
    /// The contract-99 variant only changes the plugin's own [assembly: LoupePlugin(...)].</summary>
    static string BuildSample(int? contractVersion)
    {
        if (contractVersion is not null) _ = SamplePlugin.Value; // dependencies built once, by the normal build
        var outDir = TestEnv.TempDir("loupe-sample-plugin");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        var args = new List<string> { "build", Path.Combine(TestEnv.RepoRoot, "samples", "ThirdPartyPlugin", "Loupe.Sample.EdgeMap.csproj"),
            "-c", "Release", "-o", outDir, "-nologo", "-v", "q" };
        if (contractVersion is not null) args.AddRange(["--no-dependencies", $"-p:LoupePluginContractVersion={contractVersion}"]);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync(); var se = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"building the sample plugin failed:\n{so.Result}\n{se.Result}");
        return outDir;
    }

    static string EdgePipeline(string pluginDir, string steps) => TestEnv.FixturePipeline(steps, pluginDir);

    [Fact]
    public void BuiltInPluginsRegisterKebabCaseIdsAndCarryNoTorchSharp()
    {
        using var registry = ComponentRegistry.Load([TestEnv.PluginDirectory]);
        foreach (var id in new[] { "torchvision", "image-folder", "idx", "npy", "top-1", "class", "saliency", "grad-cam", "occlusion", "filters", "activations" })
            Assert.Contains(registry.Components, c => c.Id == id);
        Assert.All(registry.Components, c => Assert.Matches("^[a-z0-9]+(-[a-z0-9]+)*$", c.Id));
        foreach (var dir in Directory.GetDirectories(TestEnv.PluginDirectory))
        {
            Assert.False(File.Exists(Path.Combine(dir, "TorchSharp.dll")), $"{dir} carries TorchSharp.dll");
            Assert.Empty(Directory.GetFiles(dir, "libtorch*", SearchOption.AllDirectories));
            Assert.False(File.Exists(Path.Combine(dir, "Loupe.Abstractions.dll")), $"{dir} carries the contract assembly");
        }
    }

    [Fact]
    public void ThirdPartyPluginRunsFromAPipelineFolder()
    {
        var path = EdgePipeline(SamplePlugin.Value, "  - id: edges\n    uses: edge-map\n");
        var r = TestEnv.Run(path);
        Assert.Equal(0, r.ExitCode);
        var edges = TestEnv.Artifact(r, "edges/00002.edges.npy");
        Assert.Equal([28L, 28], edges.Shape);
        Assert.Contains(r.Manifest!["environment"]!["plugins"]!.AsArray(), p => p!["name"]!.GetValue<string>() == "Loupe.Sample.EdgeMap");
    }

    [Fact]
    public void AThrowingPluginFailsItsStepOnlyAndKeepsTheOthersResults()
    {
        var path = EdgePipeline(SamplePlugin.Value, """
              - id: before
                uses: saliency
              - id: broken
                uses: edge-map
                with: { fail: true }
              - id: after
                uses: grad-cam
                with: { layer: relu3 }
            """);
        var r = TestEnv.Run(path);
        Assert.Equal(1, r.ExitCode);
        var steps = r.Manifest!["steps"]!.AsArray();
        Assert.Equal(["succeeded", "failed", "succeeded"], steps.Select(s => s!["status"]!.GetValue<string>()));
        Assert.Contains("asked to fail", steps[1]!["error"]!.GetValue<string>());
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "manifest.json")))!;
        Assert.Equal("failed", manifest["status"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "before", "00000.saliency.npy")));
        Assert.True(File.Exists(Path.Combine(r.OutDir!, "after", "00003.grad-cam-layer.npy")));
        Assert.DoesNotContain(manifest["artifacts"]!.AsArray(), a => a!["step"]!.GetValue<string>() == "broken");
    }

    [Fact]
    public void APluginFolderCarryingTorchSharpIsRefused()
    {
        var dir = TestEnv.TempDir("loupe-bad-plugin");
        foreach (var f in Directory.GetFiles(SamplePlugin.Value)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(dir, "TorchSharp.dll"), "not really");
        var r = TestEnv.Run(EdgePipeline(dir, "  - uses: edge-map\n"));
        Assert.Equal(2, r.ExitCode);
        var e = Assert.Single(r.Errors);
        Assert.Contains("carries its own TorchSharp.dll", e.Message);
        Assert.Contains("Loupe.Sample.EdgeMap", e.Message);
    }

    [Fact]
    public void APluginBuiltForAnotherContractVersionIsRefused()
    {
        var r = TestEnv.Run(EdgePipeline(SamplePluginV99.Value, "  - uses: edge-map\n"));
        Assert.Equal(2, r.ExitCode);
        var e = Assert.Single(r.Errors);
        Assert.Contains("contract version 99", e.Message);
        Assert.Contains($"supports version {LoupeContract.Version}", e.Message);
    }

    /// <summary>A fresh copy of the sample plugin at a new path (never loaded in this process yet).</summary>
    static string FreshCopy()
    {
        var dir = TestEnv.TempDir("loupe-plugin-copy");
        foreach (var f in Directory.GetFiles(SamplePlugin.Value)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    static bool IsLoaded(string dir) => System.Runtime.Loader.AssemblyLoadContext.All.SelectMany(c => c.Assemblies)
        .Any(a => !string.IsNullOrEmpty(a.Location) && a.Location.StartsWith(dir, StringComparison.Ordinal));

    [Fact]
    public void PluginsLoadOnlyFromConfiguredFolders()
    {
        // The plugin sits beside the pipeline file, in a plugins/ folder next to it and in the working folder: none is configured.
        var work = FreshCopy();
        var sub = Path.Combine(work, "plugins");
        Directory.CreateDirectory(sub);
        foreach (var f in Directory.GetFiles(work)) File.Copy(f, Path.Combine(sub, Path.GetFileName(f)));
        var pipeline = TestEnv.Pipeline(File.ReadAllText(TestEnv.FixturePipeline("  - uses: edge-map\n")), work);
        var r = TestEnv.Run(pipeline);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("unknown analysis 'edge-map'", Assert.Single(r.Errors).Message);
        Assert.False(IsLoaded(work));
        var (code, stdout, _) = TestEnv.Cli(work, "plugins");
        Assert.Equal(0, code);
        Assert.DoesNotContain("EdgeMap", stdout);
        Assert.Contains("Loupe.Analysis.Decisions", stdout);
    }

    /// <summary>A fixture pipeline using edge-map with <c>plugins: [ { path, sha256 } ]</c> on line 4.</summary>
    static string PinnedPipeline(string path, string sha)
    {
        var p = TestEnv.FixturePipeline("  - uses: edge-map\n");
        File.WriteAllText(p, File.ReadAllText(p).Replace("model:", $"plugins: [ {{ path: {TestEnv.Yaml(path)}, sha256: {sha} }} ]\nmodel:"));
        return p;
    }

    [Fact]
    public void APinnedPluginLoadsOnlyWhenItsHashMatches()
    {
        var dir = FreshCopy();
        var dll = Path.Combine(dir, "Loupe.Sample.EdgeMap.dll");
        var actual = PluginHost.Sha256File(dll);
        var wrong = new string('0', 63) + "1";
        var refused = TestEnv.Run(PinnedPipeline(dir, wrong));
        Assert.Equal(2, refused.ExitCode);
        var e = Assert.Single(refused.Errors);
        Assert.Contains($"plugin {dll}: SHA-256 mismatch: the pipeline pins {wrong}, but the file's is {actual}; refusing to load it", e.Message);
        Assert.Equal(4, e.Line); // the plugins: entry
        Assert.False(IsLoaded(dir), "a plugin whose pin does not match must not be loaded");

        var ok = TestEnv.Run(PinnedPipeline(dll, actual.ToUpperInvariant())); // a .dll path works too; hex case does not matter
        Assert.Equal(0, ok.ExitCode);
        Assert.Contains(ok.Manifest!["environment"]!["plugins"]!.AsArray(), p => p!["sha256"]!.GetValue<string>() == actual);
        Assert.True(IsLoaded(dir)); // the check above can see a loaded plugin

        // A pin needs exactly one plugin; a malformed hash is a parse error at its line.
        var two = TestEnv.TempDir("loupe-two-plugins");
        Directory.CreateDirectory(Path.Combine(two, "a")); Directory.CreateDirectory(Path.Combine(two, "b"));
        foreach (var f in Directory.GetFiles(dir)) { File.Copy(f, Path.Combine(two, "a", Path.GetFileName(f))); File.Copy(f, Path.Combine(two, "b", Path.GetFileName(f))); }
        Assert.Contains("must name exactly one plugin, but it holds 2", Assert.Single(TestEnv.Run(PinnedPipeline(two, actual)).Errors).Message);
        var bad = Assert.Single(TestEnv.Run(PinnedPipeline(dir, "abc")).Errors);
        Assert.Contains("'sha256' must be 64 hexadecimal digits", bad.Message);
        Assert.Equal(4, bad.Line);
    }

    [Fact]
    public void VerifyReportsEachPluginsPathVersionContractAndHashWithoutLoadingIt()
    {
        var dir = FreshCopy();
        var dll = Path.Combine(dir, "Loupe.Sample.EdgeMap.dll");
        var checks = PluginHost.Verify([new PluginSource(dir), new PluginSource(SamplePluginV99.Value)]);
        Assert.False(IsLoaded(dir));
        var c = checks[0];
        Assert.Equal((dll, "Loupe.Sample.EdgeMap", LoupeContract.Version, PluginHost.Sha256File(dll)), (c.Path, c.Name, c.ContractVersion, c.Sha256));
        Assert.Matches(@"^\d+\.\d+\.\d+\.\d+$", c.Version);
        Assert.True(c.Ok);
        Assert.Equal(99, checks[1].ContractVersion);
        Assert.Contains("built for contract version 99", checks[1].Error);

        // The CLI: built-in plugins plus a pipeline's pinned entry; a wrong pin fails the check (exit 2).
        var (code, stdout, stderr) = TestEnv.Cli(dir, "plugins", "--verify", "--json", PinnedPipeline(dir, PluginHost.Sha256File(dll)));
        Assert.True(code == 0, stdout + stderr);
        var plugins = JsonNode.Parse(stdout)!["plugins"]!.AsArray();
        Assert.Contains(plugins, p => p!["name"]!.GetValue<string>() == "Loupe.Analysis.Cam" && p["contractVersion"]!.GetValue<int>() == LoupeContract.Version);
        var edge = Assert.Single(plugins, p => p!["path"]!.GetValue<string>() == dll)!;
        Assert.Equal(PluginHost.Sha256File(dll), edge["pinnedSha256"]!.GetValue<string>());
        Assert.All(plugins, p => Assert.Matches("^[0-9a-f]{64}$", p!["sha256"]!.GetValue<string>()));
        var (badCode, badOut, _) = TestEnv.Cli(dir, "plugins", "--verify", PinnedPipeline(dir, new string('a', 64)));
        Assert.Equal(2, badCode);
        Assert.Contains("FAIL Loupe.Sample.EdgeMap", badOut);
        Assert.Contains("SHA-256 mismatch", badOut);
    }

    [Fact]
    public void AMissingPluginFolderIsAClearError()
    {
        var r = TestEnv.Run(EdgePipeline("/nonexistent/plugins", "  - uses: edge-map\n"));
        Assert.Contains("plugin folder not found: /nonexistent/plugins", Assert.Single(r.Errors).Message);
    }

    [Fact]
    public void A_pin_is_checked_before_any_copy_loads_and_unpinned_copies_are_refused()
    {
        // Issue 26, hole 4: the host's folders (and LOUPE_PLUGIN_PATH) come before the pipeline's entries, so an
        // unpinned copy of a pinned plugin used to load (and run its registrar) before the pin was checked.
        var pinned = FreshCopy();
        var earlier = FreshCopy();
        var dll = Path.Combine(pinned, "Loupe.Sample.EdgeMap.dll");
        RunResult Run(string sha) => PipelineRunner.Run(new RunRequest(PinnedPipeline(pinned, sha))
        {
            OutDir = Path.Combine(TestEnv.TempDir(), "out"), PluginDirectories = [TestEnv.PluginDirectory, earlier],
        });
        var wrong = Run(new string('0', 64));
        Assert.Contains("SHA-256 mismatch", Assert.Single(wrong.Errors).Message);
        var copy = Run(PluginHost.Sha256File(dll));
        Assert.Equal(2, copy.ExitCode);
        Assert.Contains($"plugin {Path.Combine(earlier, "Loupe.Sample.EdgeMap.dll")} is an unpinned copy of the pinned plugin 'Loupe.Sample.EdgeMap'", Assert.Single(copy.Errors).Message);
        Assert.False(IsLoaded(earlier), "an unpinned copy of a pinned plugin must not load");
        Assert.False(IsLoaded(pinned), "nothing loads while a pin is unresolved");
        // The pinned file reached a second time through a folder entry is the same file: that is fine.
        var same = PipelineRunner.Run(new RunRequest(PinnedPipeline(dll, PluginHost.Sha256File(dll)))
        {
            OutDir = Path.Combine(TestEnv.TempDir(), "out"), PluginDirectories = [TestEnv.PluginDirectory, pinned],
        });
        Assert.True(same.ExitCode == 0, string.Join("\n", same.Errors));
    }
}
