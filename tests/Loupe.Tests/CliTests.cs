using System.Text.Json.Nodes;

namespace Loupe.Tests;

/// <summary>End-to-end runs of the `loupe` executable on the shipped configs and bad input.</summary>
public class CliTests
{
    [Fact]
    public void TheRunSummaryShowsAFewMetricsPerStepAndCountsTheRest()
    {
        // ROAD's default curve has 50 points: 102 metrics, which the summary must not print one by one.
        var pipeline = TestEnv.FixturePipeline("""
              - { id: sal, uses: saliency }
              - { id: road, uses: road, with: { of: sal } }
              - { id: sp, uses: sparseness, with: { of: sal } }
            """);
        var outDir = Path.Combine(TestEnv.TempDir("loupe-cli"), "run");
        var (code, stdout, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "run", pipeline, "--out", outDir);
        Assert.True(code == 0, stdout + stderr);
        int rows = File.ReadAllLines(Path.Combine(outDir, "metrics.csv")).Count(l => l.StartsWith("road,"));
        Assert.True(rows > 100, $"{rows} road rows in metrics.csv");
        var line = stdout.Split('\n').Single(l => l.StartsWith("road ") && l.Contains("road_mean="));
        Assert.EndsWith($"… {rows - 8} more in metrics.csv", line.TrimEnd());
        Assert.Equal(8, line.Split("  ").Count(p => p.Contains('=')));
        Assert.Contains(stdout.Split('\n'), l => l.StartsWith("sp ") && l.Contains("sparseness_mean=") && !l.Contains("more in metrics.csv"));
    }

    [Fact]
    public void QuickstartRunsEndToEndAndWritesAManifest()
    {
        var work = TestEnv.TempDir("loupe-cli");
        var outDir = Path.Combine(work, "run");
        var (code, stdout, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "run", "configs/quickstart.yaml", "--out", outDir);
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains($"outputs: {outDir}", stdout);
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "manifest.json")))!;
        Assert.Equal("succeeded", m["status"]!.GetValue<string>());
        var steps = m["steps"]!.AsArray();
        Assert.True(steps.Count >= 5);
        Assert.All(steps, s => Assert.Equal("succeeded", s!["status"]!.GetValue<string>()));
        var artifacts = m["artifacts"]!.AsArray();
        foreach (var a in artifacts)
        {
            Assert.NotNull(a!["step"]);
            Assert.NotNull(a["kind"]);
            Assert.NotNull(a["shape"]);
            Assert.True(File.Exists(Path.Combine(outDir, a["path"]!.GetValue<string>())), a["path"]!.ToString());
        }
        Assert.Contains(artifacts, a => a!["kind"]!.GetValue<string>() == "raw" && a["input"] is not null);
        Assert.Contains(artifacts, a => a!["kind"]!.GetValue<string>() == "display");
        Assert.Matches("^[0-9a-f]{64}$", m["model"]!["files"]![0]!["sha256"]!.GetValue<string>());
        Assert.Matches("^[0-9a-f]{64}$", m["data"]!["files"]![0]!["sha256"]!.GetValue<string>());
        Assert.True(m["data"]!["count"]!.GetValue<long>() >= 16);
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories));
        // Methods × images comparison of the per-input display images.
        Assert.True(File.Exists(Path.Combine(outDir, "comparison.png")));
        Assert.Equal(["saliency/saliency", "grad-cam/grad-cam", "occlusion/occlusion"],
            m["comparison"]!["columns"]!.AsArray().Select(c => c!.GetValue<string>()));

        // A second run into the same folder is refused, and the first run's files stay intact.
        var before = File.ReadAllText(Path.Combine(outDir, "manifest.json"));
        var (code2, _, err2) = TestEnv.Cli(TestEnv.RepoRoot, "run", "configs/quickstart.yaml", "--out", outDir);
        Assert.Equal(2, code2);
        Assert.Contains("never overwrites", err2);
        Assert.Equal(before, File.ReadAllText(Path.Combine(outDir, "manifest.json")));
    }

    [Fact]
    public void EveryShippedConfigValidates()
    {
        foreach (var config in Directory.GetFiles(Path.Combine(TestEnv.RepoRoot, "configs"), "*.yaml"))
        {
            var (code, stdout, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "validate", config);
            // Configs over the full Fashion-MNIST test set need the Debian dataset package (scripts/setup.sh --train).
            if (code != 0 && stderr.Contains("not found: /usr/share/datasets/")) continue;
            Assert.True(code == 0, $"{config}:\n{stdout}{stderr}");
        }
    }

    [Fact]
    public void ValidatePluginsDescribeAndLayers()
    {
        var (code, stdout, _) = TestEnv.Cli(TestEnv.RepoRoot, "validate", "configs/quickstart.yaml");
        Assert.Equal(0, code);
        Assert.Contains("valid", stdout);

        (code, stdout, _) = TestEnv.Cli(TestEnv.RepoRoot, "plugins");
        Assert.Equal(0, code);
        foreach (var id in new[] { "grad-cam", "saliency", "occlusion", "filters", "activations", "torchvision", "idx" }) Assert.Contains(id, stdout);

        (code, stdout, _) = TestEnv.Cli(TestEnv.RepoRoot, "describe", "occlusion");
        Assert.Equal(0, code);
        Assert.Contains("window", stdout);
        Assert.Contains("default [8]", stdout);   // one value or [height, width]
        Assert.Contains("zero, mean, blur", stdout);

        var (bad, _, err) = TestEnv.Cli(TestEnv.RepoRoot, "describe", "grad-kam");
        Assert.Equal(2, bad);
        Assert.Contains("did you mean 'grad-cam'", err);

        (code, stdout, _) = TestEnv.Cli(TestEnv.RepoRoot, "layers", "configs/quickstart.yaml");
        Assert.Equal(0, code);
        Assert.Matches(@"relu3\s+ReLU\s+1×128×7×7", stdout);
        Assert.Matches(@"fc\s+Linear\s+1×10", stdout);
    }

    [Fact]
    public void BadInputGivesClearErrorsAndNonZeroExit()
    {
        var dir = TestEnv.TempDir("loupe-cli-bad");
        File.WriteAllText(Path.Combine(dir, "broken.yaml"), "version: 1\nsteps: [\n");
        var (code, _, err) = TestEnv.Cli(dir, "run", "broken.yaml");
        Assert.Equal(2, code);
        Assert.Contains("broken.yaml:", err);
        Assert.Contains("malformed YAML", err);

        // A corrupt image in an image folder: the error names the file.
        var images = Path.Combine(dir, "images");
        Directory.CreateDirectory(images);
        foreach (var png in Directory.GetFiles(Path.Combine(TestEnv.Samples, "images", "fashion")).Take(2)) File.Copy(png, Path.Combine(images, Path.GetFileName(png)));
        File.WriteAllBytes(Path.Combine(images, "zz-corrupt.png"), [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3, 4, 5]);
        File.WriteAllText(Path.Combine(dir, "images.yaml"), $"""
            version: 1
            {TestEnv.DemoModel}
            data:
              uses: image-folder
              with: {"{"} path: images {"}"}
            steps:
              - uses: saliency
            """);
        (code, _, err) = TestEnv.Cli(dir, "run", "images.yaml", "--out", Path.Combine(dir, "out1"));
        Assert.Equal(2, code);
        Assert.Contains("zz-corrupt.png", err);
        Assert.False(Directory.Exists(Path.Combine(dir, "out1")));

        // The same folder with on_error: skip runs, and the manifest records the skipped file.
        var (code3, _, err3) = TestEnv.Cli(dir, "run", "images.yaml", "--out", Path.Combine(dir, "out2"), "--set", "data.with.on_error=skip");
        Assert.True(code3 == 0, err3);
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "out2", "manifest.json")))!;
        Assert.Contains(m["warnings"]!.AsArray(), w => w!.GetValue<string>().Contains("zz-corrupt.png"));
        Assert.Equal(2, m["data"]!["count"]!.GetValue<long>());
    }
}
