using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Loupe.Tests;

/// <summary>How `loupe run` behaves for people and scripts: summary table, --quiet, --json, --set, several files,
/// no colour codes when the output is not a terminal.</summary>
public class CliExperienceTests
{
    static string Fixture(string dir, string name, string steps)
    {
        var path = TestEnv.FixturePipeline(steps, batchSize: 2);
        var target = Path.Combine(dir, name);
        File.WriteAllText(target, File.ReadAllText(path).Replace("name: fixture", "name: " + Path.GetFileNameWithoutExtension(name)));
        return target;
    }

    [Fact]
    public void RunPrintsASummaryTableWithoutColourCodesWhenNotATerminal()
    {
        var dir = TestEnv.TempDir("loupe-cli-ux");
        var file = Fixture(dir, "a.yaml", "  - { id: s, uses: saliency }\n  - { id: g, uses: gradient-x-input }");
        // NO_COLOR is unset (see Loupe below): colours must be off because stdout and stderr are pipes.
        var (code, stdout, stderr) = Loupe(dir, "run", file, "--out", Path.Combine(dir, "out"));
        Assert.True(code == 0, stdout + stderr);
        Assert.False((stdout + stderr).Contains('\u001b'), "ANSI escape codes on a pipe"); // ordinal: culture-aware Contains ignores control characters
        Assert.Matches(@"step\s+uses\s+status\s+time", stdout);
        Assert.Matches(@"\ns\s+saliency\s+succeeded\s+\d+\.\d\ds", stdout);
        Assert.Matches(@"\ng\s+gradient-x-input\s+succeeded", stdout);
        Assert.Contains("status: succeeded", stdout);
        Assert.Contains("[1/2] s (saliency)", stderr);   // one progress line per step on a pipe, no \r redraws
        Assert.False(stderr.Contains('\r'), "progress redraws on a pipe");
    }

    [Fact]
    public void QuietJsonSetAndSeveralPipelineFiles()
    {
        var dir = TestEnv.TempDir("loupe-cli-ux");
        var a = Fixture(dir, "a.yaml", "  - { id: s, uses: saliency }");
        var b = Fixture(dir, "b.yaml", "  - { id: s, uses: saliency, with: { abs: true } }");
        var bad = Fixture(dir, "bad.yaml", "  - { id: s, uses: salincy }");

        // --quiet: only the output folder on stdout, nothing on stderr.
        var (code, stdout, stderr) = Loupe(dir, "run", a, "--quiet", "--out", Path.Combine(dir, "q"));
        Assert.True(code == 0, stderr);
        Assert.Equal($"outputs: {Path.Combine(dir, "q")}", stdout.Trim());
        Assert.Equal("", stderr);

        // Several files with --json and --set: one machine-readable summary per pipeline, and the override applied.
        (code, stdout, stderr) = Loupe(dir, "run", a, b, "--json", "--set", "steps.s.with.abs=false");
        Assert.True(code == 0, stdout + stderr);
        var runs = JsonNode.Parse(stdout)!.AsArray();  // stdout is only the JSON
        Assert.Equal(2, runs.Count);
        Assert.Equal([a, b], runs.Select(r => r!["pipeline"]!.GetValue<string>()));
        foreach (var r in runs)
        {
            Assert.Equal(0, r!["exitCode"]!.GetValue<int>());
            Assert.Equal("succeeded", r["status"]!.GetValue<string>());
            Assert.Equal("succeeded", r["steps"]![0]!["status"]!.GetValue<string>());
            var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(r["outDir"]!.GetValue<string>(), "manifest.json")))!;
            Assert.Equal("false", manifest["pipeline"]!["steps"]![0]!["with"]!["abs"]!.ToString());
        }

        // An invalid file among several: its summary says why, the exit code is the worst (2), the others still run.
        (code, stdout, stderr) = Loupe(dir, "run", bad, a, "--json", "--set", "output.dir=runs/again");
        Assert.Equal(2, code);
        runs = JsonNode.Parse(stdout)!.AsArray();
        Assert.Equal("invalid", runs[0]!["status"]!.GetValue<string>());
        Assert.Contains("did you mean 'saliency'", runs[0]!["errors"]![0]!.GetValue<string>());
        Assert.Equal("succeeded", runs[1]!["status"]!.GetValue<string>());
        Assert.Contains("bad.yaml:", stderr);

        // --out names one folder: refused with several files, before anything runs.
        (code, _, stderr) = Loupe(dir, "run", a, b, "--out", Path.Combine(dir, "o"));
        Assert.Equal(2, code);
        Assert.Contains("--out can only be used with a single pipeline file", stderr);
        Assert.False(Directory.Exists(Path.Combine(dir, "o")));
    }

    [Fact]
    public void EveryVerbHasHelpAndHelpLoadsNoPlugin()
    {
        // LOUPE_PLUGIN_PATH pointing at a missing folder makes any plugin loading fail: help must not load plugins.
        foreach (var verb in new[] { "", "run", "validate", "merge", "plugins", "describe", "layers", "schema", "new", "new plugin" })
        {
            var (code, stdout, stderr) = Loupe(TestEnv.RepoRoot, [.. verb.Split(' ', StringSplitOptions.RemoveEmptyEntries), "--help"], ("LOUPE_PLUGIN_PATH", "/nonexistent-loupe-plugins"));
            Assert.True(code == 0, $"loupe {verb} --help: {stderr}");
            Assert.Contains("Usage:", stdout);
            Assert.Equal("", stderr);
        }
    }

    static (int Code, string Stdout, string Stderr) Loupe(string dir, params string[] args) => Loupe(dir, args, []);

    /// <summary>Runs the CLI with stdout and stderr redirected (not terminals) and NO_COLOR unset.</summary>
    static (int Code, string Stdout, string Stderr) Loupe(string dir, string[] args, params (string Key, string Value)[] env)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(TestEnv.CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("NO_COLOR");
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync(); var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException("loupe " + string.Join(" ", args)); }
        return (p.ExitCode, so.Result, se.Result);
    }
}
