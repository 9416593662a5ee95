using System.Text.Json.Nodes;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Issue 26, holes 2 and 3: shard folders come from other machines. Paths in their manifests must stay inside
/// them (and the output inside --out), and merging never loads code that a shard's manifest names.</summary>
public class SecurityMergeTests
{
    /// <summary>Two fresh shards of a saliency run over the 4 fixture inputs.</summary>
    static string[] Shards()
    {
        var dir = TestEnv.TempDir("loupe-sec-shards");
        var pipeline = TestEnv.FixturePipeline("  - { id: sal, uses: saliency }\n", batchSize: 2);
        return Enumerable.Range(0, 2).Select(i =>
        {
            var r = PipelineRunner.Run(new RunRequest(pipeline) { OutDir = Path.Combine(dir, $"shard{i}"), PluginDirectories = [TestEnv.PluginDirectory], Shard = new ShardRequest(i, 2) });
            Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
            return r.OutDir!;
        }).ToArray();
    }

    static void Edit(string shard, Action<JsonObject> edit)
    {
        var file = Path.Combine(shard, "manifest.json");
        var m = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
        edit(m);
        File.WriteAllText(file, m.ToJsonString());
    }

    static RunResult Merge(string[] shards, string outDir) =>
        ShardMerger.Merge(new MergeRequest(shards, outDir) { PluginDirectories = [TestEnv.PluginDirectory] });

    [Fact]
    public void Artifact_paths_in_a_shard_manifest_cannot_leave_the_shard_or_the_output()
    {
        var shards = Shards();
        var work = TestEnv.TempDir("loupe-sec-merge");
        var outside = Path.Combine(work, "escaped.npy");
        string original = "";
        Edit(shards[0], m => original = (string)m["artifacts"]![0]!["path"]!);
        // ../../escaped.npy: read from beside the shard, written beside --out.
        File.WriteAllText(Path.Combine(Path.GetDirectoryName(shards[0])!, "escaped.npy"), "x");
        Edit(shards[0], m => m["artifacts"]![0]!["path"] = "../escaped.npy");
        var r = Merge(shards, Path.Combine(work, "merged", "out"));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("artifact: path '../escaped.npy' points outside", Assert.Single(r.Errors).Message);
        Assert.False(File.Exists(outside));
        Assert.False(Directory.Exists(Path.Combine(work, "merged", "out")));

        // An absolute path, and a link inside the shard that leads out of it.
        Edit(shards[0], m => m["artifacts"]![0]!["path"] = "/etc/passwd");
        Assert.Contains("path '/etc/passwd' points outside", Assert.Single(Merge(shards, Path.Combine(work, "o2")).Errors).Message);
        File.CreateSymbolicLink(Path.Combine(shards[0], "sal", "link.npy"), "/etc/passwd");
        Edit(shards[0], m => m["artifacts"]![0]!["path"] = "sal/link.npy");
        Assert.Contains("resolves to /etc/passwd", Assert.Single(Merge(shards, Path.Combine(work, "o3")).Errors).Message);
        // A step id that is a path.
        Edit(shards[0], m => m["artifacts"]![0]!["path"] = original);
        Assert.Equal(0, Merge(shards, Path.Combine(work, "ok")).ExitCode); // the shards are fine otherwise
        foreach (var s in shards) Edit(s, m => m["steps"]![0]!["id"] = "../../x");
        Assert.Contains("is not a valid step id", Merge(shards, Path.Combine(work, "o4")).Errors[0].Message);
        // Duplicate keys (found by the fuzzer's manifest target: an ArgumentException from JsonObject, in merge and report).
        var file = Path.Combine(shards[1], "manifest.json");
        File.WriteAllText(file, File.ReadAllText(file).Replace("{\"loupe\"", "{\"model\":1,\"loupe\""));
        Assert.Contains("unreadable manifest", Merge(shards, Path.Combine(work, "o5")).Errors.Single(e => e.File == file).Message);
        Assert.Contains("not a Loupe manifest: invalid JSON", Assert.Throws<Loupe.Abstractions.LoupeException>(() => Loupe.Core.Report.RunFolder.Open(shards[1])).Message);
    }

    [Fact]
    public void Merge_never_loads_plugins_named_in_a_shard_manifest()
    {
        var shards = Shards();
        // A folder that looks like a plugin to discovery: loading it would fail the merge ("could not be loaded").
        var evil = TestEnv.TempDir("loupe-sec-evil");
        foreach (var ext in new[] { ".dll", ".deps.json", ".runtimeconfig.json" }) File.WriteAllText(Path.Combine(evil, "Evil" + ext), "not an assembly");
        var sha = new string('a', 64);
        // Both documented forms: a folder, and { path, sha256 } (which used to crash the merge with InvalidOperationException).
        foreach (var s in shards)
            Edit(s, m => m["pipeline"]!["plugins"] = new JsonArray(evil, new JsonObject { ["path"] = evil, ["sha256"] = sha }));
        var r = Merge(shards, Path.Combine(TestEnv.TempDir("loupe-sec-merge"), "out"));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.DoesNotContain(System.Runtime.Loader.AssemblyLoadContext.All.SelectMany(c => c.Assemblies), a => a.Location.StartsWith(evil, StringComparison.Ordinal));

        // The folder loads only when the user names it: 'loupe merge --plugin DIR' (here it is not a real plugin, so the
        // CLI's attempt to load it is a clear error, which shows it tried).
        var (code, _, stderr) = TestEnv.Cli(TestEnv.RepoRoot, "merge", shards[0], shards[1], "--out", Path.Combine(TestEnv.TempDir("loupe-sec-merge"), "cli"), "--plugin", evil);
        Assert.Equal(2, code);
        Assert.Contains($"plugin {Path.Combine(evil, "Evil.dll")} could not be loaded", stderr);

        // A step whose plugin is not loaded fails with a message that names the folder but does not load it.
        foreach (var s in shards) Edit(s, m => m["steps"]![0]!["uses"] = "evil-technique");
        var failed = Merge(shards, Path.Combine(TestEnv.TempDir("loupe-sec-merge"), "out"));
        Assert.Equal(1, failed.ExitCode);
        var error = (string)failed.Manifest!["steps"]![0]!["error"]!;
        Assert.Contains("unknown analysis 'evil-technique'", error);
        Assert.Contains($"names plugin folder(s) '{evil}'", error);
        Assert.Contains("pass the plugin you trust with --plugin DIR", error);
    }

    [Fact]
    public void Shard_numbers_in_a_manifest_are_checked_before_they_are_counted()
    {
        // Found by the fuzzer's manifest target: a count of −12 threw from the list of missing shards. Each bad number
        // is a damaged manifest named by file; a count of int.MaxValue names ten missing shards and counts the rest.
        var shards = Shards();
        var work = TestEnv.TempDir("loupe-sec-shardinfo");
        var file = Path.Combine(shards[0], "manifest.json");
        var original = File.ReadAllText(file);
        foreach (var (key, value) in new (string, long)[] { ("count", -12), ("count", 0), ("index", -1), ("index", 2), ("firstRow", -4), ("rows", -1), ("rows", long.MaxValue) })
        {
            File.WriteAllText(file, original);
            Edit(shards[0], m => m["shard"]![key] = value);
            var r = Merge(shards, Path.Combine(work, $"{key}{value}"));
            Assert.Equal(2, r.ExitCode);
            var e = r.Errors.Single(x => x.File == file);
            Assert.Contains("damaged manifest", e.Message);
            Assert.Contains("is not a shard of a run", e.Message);
        }
        File.WriteAllText(file, original);
        Edit(shards[0], m => m["shard"]!["index"] = 1e12);   // not an int
        Assert.Contains("damaged manifest", Merge(shards, Path.Combine(work, "big")).Errors.Single(x => x.File == file).Message);

        File.WriteAllText(file, original);
        foreach (var s in shards) Edit(s, m => m["shard"]!["count"] = int.MaxValue);
        var huge = Merge(shards, Path.Combine(work, "huge"));
        Assert.Equal(2, huge.ExitCode);
        Assert.Equal($"missing shard(s) {string.Join(", ", Enumerable.Range(2, 10).Select(i => $"{i}/{int.MaxValue}"))} and {int.MaxValue - 12L} more: all {int.MaxValue} shards are needed", Assert.Single(huge.Errors).Message);
        Assert.False(Directory.Exists(Path.Combine(work, "huge")));
    }
}
