using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>One unsharded run and the same pipeline as 4 shards (<c>--shard i/4</c>), shared by the shard tests.</summary>
public sealed class ShardRuns
{
    public string Dir { get; } = TestEnv.TempDir("loupe-shards");
    public string PipelineFile { get; }
    public RunResult Full { get; }
    public RunResult[] Shards { get; }

    public ShardRuns()
    {
        string S(params string[] p) => TestEnv.Yaml(Path.Combine([TestEnv.Samples, .. p]));
        // The issue's pipeline: embeddings + max-patches + one attribution + metrics of it, over 200 demo images; plus the
        // techniques that draw noise (per input id, so shards draw the same).
        PipelineFile = TestEnv.Pipeline($$"""
            version: 1
            name: shards
            model:
              uses: torchvision
              with: { architecture: fashion-cnn, weights: {{S("models", "fashion-cnn", "fashion-cnn.safetensors")}} }
              labels: {{S("models", "fashion-cnn", "labels.txt")}}
            data:
              uses: idx
              with: { images: {{S("data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz")}}, limit: 200 }
            settings: { batch_size: 16 }
            steps:
              - { id: emb, uses: embeddings, with: { layer: gap } }
              - { id: patches, uses: max-patches, with: { layer: relu3, channels: [0, 3, 7], top: 9 } }
              - { id: cam, uses: grad-cam, with: { layer: relu3 } }
              - id: del
                uses: deletion
                with: { of: cam, steps: 4, expect: [ "auc_mean < 0.95" ] }
                expect: [ "auc_std < 1" ]
              - { id: pg, uses: pointing-game, with: { of: cam } }
              - { id: sg, uses: noise-tunnel, with: { inner: { uses: saliency }, samples: 3 } }
              - { id: inf, uses: infidelity, with: { of: cam, samples: 3 } }
              - { id: sens, uses: sensitivity-max, with: { of: cam, samples: 2 } }
              - { id: fc, uses: faithfulness-correlation, with: { of: cam, runs: 4, subset_size: 50 } }
              - { id: ll, uses: local-lipschitz, with: { of: cam, samples: 2 } }
              - { id: emprt, uses: mprt, with: { of: cam, variant: efficient, extra_scores: true } }
              - { id: irofq, uses: irof, with: { of: cam, cell: 7, score: quantus, baseline: running-mean, quantus_batch_size: 8 } }
              - { id: road, uses: road, with: { of: cam, percentages: [10, 50, 90] } }
              - { id: sel, uses: selectivity, with: { of: cam, patch: 7 } }
              - { id: roadc, uses: road-confidence, with: { of: cam, percentiles: [20, 80], scale: true } }
              - { id: arcc, uses: arcc, with: { of: cam, percentiles: [50], scale: true } }
              - { id: dff, uses: deep-feature-factorization, with: { layer: relu3, components: 3, head: fc } }
            """, Dir);
        Full = TestEnv.Run(PipelineFile, Path.Combine(Dir, "full"));
        Shards = Enumerable.Range(0, 4).Select(i => PipelineRunner.Run(new RunRequest(PipelineFile)
        {
            OutDir = Path.Combine(Dir, $"shard{i}"), PluginDirectories = [TestEnv.PluginDirectory], Shard = new ShardRequest(i, 4),
        })).ToArray();
    }

    public RunResult Merge(string outDir, params int[] shards) =>
        ShardMerger.Merge(new MergeRequest(shards.Select(i => Shards[i].OutDir!).ToList(), outDir) { PluginDirectories = [TestEnv.PluginDirectory] });
}

/// <summary><c>--shard i/n</c> and <c>loupe merge</c>: 4 shards merged equal 1 unsharded run.</summary>
public class ShardTests(ShardRuns runs) : IClassFixture<ShardRuns>
{
    static string Why(RunResult r) => string.Join("\n", r.Errors) + r.Manifest?.ToJsonString();

    [Fact]
    public void FourShardsMergedEqualOneUnshardedRun()
    {
        Assert.True(runs.Full.ExitCode == 0, Why(runs.Full));
        foreach (var s in runs.Shards) Assert.True(s.ExitCode == 0, Why(s));
        var merged = runs.Merge(Path.Combine(TestEnv.TempDir(), "merged"), 2, 0, 3, 1);   // any order
        Assert.True(merged.ExitCode == 0, Why(merged));

        // The same artifacts: per-input files bit for bit, whole-step arrays within 1e-6, JSON equal, images and
        // tables byte for byte (they are built from the same values).
        var full = Artifacts(runs.Full);
        var mine = Artifacts(merged);
        Assert.Equal(full.Keys.Order(), mine.Keys.Order());
        Assert.True(full.Count > 600, $"{full.Count} artifacts");
        foreach (var (path, a) in full)
        {
            var (fa, fb) = (Path.Combine(runs.Full.OutDir!, path), Path.Combine(merged.OutDir!, path));
            if (a["input"] is null && path.EndsWith(".npy"))
            {
                NdArray x = Npy.Read(fa), y = Npy.Read(fb);
                Assert.Equal(x.Shape, y.Shape);
                for (int i = 0; i < x.Data.Length; i++)
                    Assert.True(Math.Abs(x.Data[i] - y.Data[i]) <= 1e-6 || float.IsNaN(x.Data[i]) && float.IsNaN(y.Data[i]), $"{path}[{i}]: {x.Data[i]} vs {y.Data[i]}");
            }
            else if (a["input"] is null && path.EndsWith(".json"))
                Assert.True(JsonNode.DeepEquals(JsonNode.Parse(File.ReadAllText(fa)), JsonNode.Parse(File.ReadAllText(fb))), path);
            else Assert.True(File.ReadAllBytes(fa).AsSpan().SequenceEqual(File.ReadAllBytes(fb)), path);
        }

        // Identical metrics, and the deferred expectations were checked on the merged values.
        Assert.True(JsonNode.DeepEquals(runs.Full.Manifest!["metricsTable"], merged.Manifest!["metricsTable"]));
        Assert.True(JsonNode.DeepEquals(runs.Full.Manifest["methodsTable"], merged.Manifest["methodsTable"]));
        Assert.NotNull(merged.Manifest["methodsTable"]);
        var steps = merged.Manifest["steps"]!.AsArray();
        for (int i = 0; i < steps.Count; i++)
            Assert.True(JsonNode.DeepEquals(runs.Full.Manifest["steps"]![i]!["metrics"], steps[i]!["metrics"]), $"{steps[i]!["id"]} metrics");
        Assert.Equal("after merge", (string?)runs.Shards[0].Manifest!["steps"]![3]!["expectations"]![0]!["passed"]);
        Assert.True((bool)steps[3]!["expectations"]![0]!["passed"]!);
        Assert.Equal(200, (long)merged.Manifest["data"]!["count"]!);
        Assert.Equal(4, merged.Manifest["mergedFrom"]!.AsArray().Count);

        // The per-input predictions: each shard streamed its rows to its own file; the merge joins them, in dataset
        // order, into a file byte-identical to the unsharded run's, and the manifests summarise it alike.
        Assert.Equal(new long[] { 48, 48, 48, 56 }, runs.Shards.Select(s => (long)s.Manifest!["predictions"]!["count"]!));
        Assert.True(JsonNode.DeepEquals(runs.Full.Manifest["predictions"], merged.Manifest["predictions"]), merged.Manifest["predictions"]?.ToJsonString());
        Assert.Equal(200, (long)merged.Manifest["predictions"]!["count"]!);
        var lines = File.ReadAllLines(Path.Combine(merged.OutDir!, Predictions.FileName));
        Assert.Equal(File.ReadAllLines(Path.Combine(runs.Full.OutDir!, Predictions.FileName)), lines);
        Assert.Equal(Predictions.Read(runs.Full.Manifest, runs.Full.OutDir!).Select(e => (string?)e["id"]), lines.Select(l => (string?)JsonNode.Parse(l)!["id"]));
        Assert.Equal(200, lines.Select(l => (string?)JsonNode.Parse(l)!["id"]).Distinct().Count());
    }

    [Fact]
    public void PredictionsOfManifestsWithInlineRecordsAreStillReadAndMerged()
    {
        // Run folders written before the records moved to predictions.jsonl keep them in manifest.json
        // (predictions.inputs): the readers and the merge take both.
        var dir = TestEnv.TempDir();
        var copies = new List<string>();
        for (int i = 0; i < 4; i++)
        {
            var src = runs.Shards[i].OutDir!;
            var dst = CopyDir(src, Path.Combine(dir, $"old{i}"));
            var m = JsonNode.Parse(File.ReadAllText(Path.Combine(dst, "manifest.json")))!.AsObject();
            var inline = new JsonArray(Predictions.Read(m, dst).Select(e => (JsonNode)e.DeepClone()).ToArray());
            var p = m["predictions"]!.AsObject();
            p.Remove("file");
            p.Remove("count");
            p["inputs"] = inline;
            File.Delete(Path.Combine(dst, Predictions.FileName));
            File.WriteAllText(Path.Combine(dst, "manifest.json"), m.ToJsonString());
            Assert.Equal(i < 3 ? 48 : 56, Predictions.Read(m, dst).Count());
            copies.Add(dst);
        }
        var merged = ShardMerger.Merge(new MergeRequest(copies, Path.Combine(dir, "merged")) { PluginDirectories = [TestEnv.PluginDirectory] });
        Assert.True(merged.ExitCode == 0, Why(merged));
        Assert.Equal(File.ReadAllLines(Path.Combine(runs.Full.OutDir!, Predictions.FileName)), File.ReadAllLines(Path.Combine(merged.OutDir!, Predictions.FileName)));
        Assert.Equal(200, (long)merged.Manifest!["predictions"]!["count"]!);
        // A file name that leaves the run folder, or a missing file, is refused naming the field or the file.
        var bad = JsonNode.Parse("""{"predictions":{"file":"../x.jsonl"}}""");
        Assert.Contains("predictions.file", Assert.Throws<LoupeException>(() => Predictions.Read(bad, dir).ToList()).Message);
        var gone = JsonNode.Parse("""{"predictions":{"file":"predictions.jsonl"}}""");
        Assert.Contains("missing", Assert.Throws<LoupeException>(() => Predictions.Read(gone, dir).ToList()).Message);
    }

    /// <summary>A copy of a run folder; returns <paramref name="dst"/>.</summary>
    static string CopyDir(string src, string dst)
    {
        foreach (var f in Directory.GetFiles(src, "*", SearchOption.AllDirectories))
        {
            var dest = Path.Combine(dst, Path.GetRelativePath(src, f));
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            File.Copy(f, dest);
        }
        return dst;
    }

    static Dictionary<string, JsonNode> Artifacts(RunResult r) =>
        r.Manifest!["artifacts"]!.AsArray().ToDictionary(a => (string)a!["path"]!, a => a!);

    [Fact]
    public void ShardsAreContiguousWholeBatchesAndRecordTheirIds()
    {
        var ids = runs.Shards.SelectMany(s => s.Manifest!["shard"]!["ids"]!.AsArray().Select(i => (string)i!)).ToList();
        Assert.Equal(Enumerable.Range(0, 200).Select(i => i.ToString("D5")), ids);
        var rows = runs.Shards.Select(s => s.Manifest!["shard"]!).ToList();
        Assert.Equal([0L, 48, 96, 144], rows.Select(r => (long)r["firstRow"]!));
        Assert.Equal([48L, 48, 48, 56], rows.Select(r => (long)r["rows"]!));
        // A shard writes its own part only, and no run-level outputs (merge writes them).
        Assert.Equal(48, Directory.GetFiles(Path.Combine(runs.Shards[1].OutDir!, "cam"), "*.grad-cam.npy").Length);
        Assert.False(File.Exists(Path.Combine(runs.Shards[1].OutDir!, "metrics.csv")));
    }

    [Fact]
    public void MergeRefusesIncompleteMixedOrRepeatedShardsAndNeverOverwrites()
    {
        var dir = TestEnv.TempDir();
        var missing = runs.Merge(Path.Combine(dir, "a"), 0, 1, 3);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("missing shard(s) 2/4", string.Join("\n", missing.Errors));
        var twice = runs.Merge(Path.Combine(dir, "b"), 0, 1, 1, 2, 3);
        Assert.Contains("shard 1/4 is given more than once", string.Join("\n", twice.Errors));
        var notShard = ShardMerger.Merge(new MergeRequest([runs.Full.OutDir!, .. runs.Shards.Select(s => s.OutDir!)], Path.Combine(dir, "c")) { PluginDirectories = [TestEnv.PluginDirectory] });
        Assert.Contains("not a shard", string.Join("\n", notShard.Errors));
        Directory.CreateDirectory(Path.Combine(dir, "d"));
        File.WriteAllText(Path.Combine(dir, "d", "keep.txt"), "x");
        var occupied = runs.Merge(Path.Combine(dir, "d"), 0, 1, 2, 3);
        Assert.Contains("already exists", string.Join("\n", occupied.Errors));
        Assert.Equal(["keep.txt"], Directory.GetFiles(Path.Combine(dir, "d")).Select(Path.GetFileName));
        // Nothing is left behind by the refused merges.
        Assert.Equal(["d"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
    }

    [Fact]
    public void AShardMissingAResultFailsOnlyThatStepOfTheMerge()
    {
        var dir = TestEnv.TempDir();
        var copies = runs.Shards.Select((s, i) => CopyDir(s.OutDir!, Path.Combine(dir, $"part-{i}"))).ToList();
        File.Delete(Path.Combine(copies[2], "emb", "features.npy"));
        var r = ShardMerger.Merge(new MergeRequest(copies, Path.Combine(dir, "merged")) { PluginDirectories = [TestEnv.PluginDirectory] });
        Assert.Equal(1, r.ExitCode);
        var steps = r.Manifest!["steps"]!.AsArray();
        Assert.Equal("failed", (string?)steps[0]!["status"]);
        Assert.Contains("shard 2/4", (string?)steps[0]!["error"]);
        Assert.Contains("emb/features.npy", (string?)steps[0]!["error"]);
        Assert.All(steps.Skip(1), s => Assert.Equal("succeeded", (string?)s!["status"]));
    }

    [Fact]
    public void WholeDatasetStepsAreRefusedUnderShardNamingTheStep()
    {
        var path = TestEnv.Pipeline(File.ReadAllText(runs.PipelineFile) + "\n  - { id: map2d, uses: tsne, with: { layer: gap } }\n");
        var e = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(path) { PluginDirectories = [TestEnv.PluginDirectory], Shard = new ShardRequest(0, 4) }));
        var error = Assert.Single(e.Errors);
        Assert.Contains("step 'map2d' (tsne) cannot run under --shard 0/4", error.Message);
        Assert.Equal(path, error.File);
        Assert.True(error.Line > 0);
        // More shards than batches: a clear error, not empty shards.
        var many = Assert.Throws<PipelineException>(() => PipelineRunner.Prepare(new RunRequest(runs.PipelineFile) { PluginDirectories = [TestEnv.PluginDirectory], Shard = new ShardRequest(0, 14) }));
        Assert.Contains("13 batch(es) of 16; use at most that many shards", many.Message);
    }

    [Fact]
    public void TheCliValidatesShardArgumentsAndMerges()
    {
        var (code, _, err) = TestEnv.Cli(runs.Dir, "run", runs.PipelineFile, "--shard", "4/4");
        Assert.Equal(2, code);
        Assert.Contains("--shard '4/4': the index must be between 0 and 3", err);
        var outDir = Path.Combine(TestEnv.TempDir(), "merged");
        (code, var stdout, err) = TestEnv.Cli(runs.Dir, ["merge", .. runs.Shards.Select(s => s.OutDir!), "--out", outDir, "--quiet"]);
        Assert.True(code == 0, err);
        Assert.Contains(outDir, stdout);
        Assert.True(File.Exists(Path.Combine(outDir, "patches", "channel-0003.png")));
    }

    [Theory]
    [InlineData("4/4", "between 0 and 3")]
    [InlineData("0/0", "at least 1")]
    [InlineData("1", "INDEX/COUNT")]
    [InlineData("-1/4", "INDEX/COUNT")]
    public void BadShardArgumentsAreExplained(string text, string message)
    {
        Assert.Null(ShardRequest.Parse(text, out var why));
        Assert.Contains(message, why);
    }

    [Theory]
    [InlineData(200, 16, 4)]
    [InlineData(23, 5, 5)]
    [InlineData(1, 1, 1)]
    [InlineData(1000, 7, 3)]
    public void ShardsCoverTheDataInWholeBatches(long total, int batch, int n)
    {
        long next = 0;
        for (int i = 0; i < n; i++)
        {
            var s = new ShardRequest(i, n).Rows(total, batch)!;
            Assert.Equal(next, s.FirstRow);
            Assert.Equal(0, s.FirstRow % batch);
            Assert.True(s.Rows > 0);
            next += s.Rows;
        }
        Assert.Equal(total, next);
        Assert.Null(new ShardRequest(0, (int)((total + batch - 1) / batch) + 1).Rows(total, batch));
    }

    /// <summary>A source without <see cref="IRangeDataSource"/>: 23 items, pixel value = row.</summary>
    sealed class Counting : IDataSource
    {
        public long? Count => 23;
        public bool Preprocessed => false;
        public IEnumerable<string> Files => [];
        public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
        {
            for (int r = 0; r < 23; r += batchSize)
            {
                int n = Math.Min(batchSize, 23 - r);
                var rows = Enumerable.Range(r, n).ToArray();
                yield return new DataBatch(rows.Select(i => $"item{i}").ToArray(), tensor(rows.Select(i => (float)i).ToArray()).view(n, 1, 1, 1), rows.Select(i => (long)i).ToArray());
            }
        }
        public void Dispose() { }
    }

    [Fact]
    public void SourcesWithoutRangesAreSlicedByStreaming()
    {
        using var source = new ShardedDataSource(new Counting(), new ShardInfo(1, 3, 7, 9));
        var seen = new List<(string Id, float Pixel, long Label)>();
        using (NewDisposeScope())
            foreach (var b in source.Read(new InputSpec(1, 1, 1, [0f], [1f]), 5, default))
                using (b)
                    for (int i = 0; i < b.Ids.Length; i++) seen.Add((b.Ids[i], b.Pixels[i].item<float>(), b.Labels![i]));
        Assert.Equal(Enumerable.Range(7, 9).Select(i => ($"item{i}", (float)i, (long)i)), seen);
        Assert.Equal(Enumerable.Range(7, 9).Select(i => $"item{i}"), source.Ids);
    }
}
