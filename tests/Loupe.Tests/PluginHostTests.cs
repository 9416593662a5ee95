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

    [Fact]
    public void AMissingPluginFolderIsAClearError()
    {
        var r = TestEnv.Run(EdgePipeline("/nonexistent/plugins", "  - uses: edge-map\n"));
        Assert.Contains("plugin folder not found: /nonexistent/plugins", Assert.Single(r.Errors).Message);
    }
}
