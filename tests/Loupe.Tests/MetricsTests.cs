using System.Text.Json.Nodes;

namespace Loupe.Tests;

/// <summary>Step-level <c>expect:</c> thresholds and the run-level metrics table.</summary>
public class MetricsTests
{
    [Fact]
    public void ExpectationsFailTheRunAfterOutputsAndMetricsAreTabulated()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: sal, uses: saliency }
              - { id: del-ok, uses: deletion, with: { of: sal, steps: 10 }, expect: ["deletion.auc < 0.999", "auc_std >= 0"] }
              - { id: del-strict, uses: deletion, with: { of: sal, steps: 10 }, expect: "auc_mean > 2" }
              - { id: ins, uses: insertion, with: { of: sal, steps: 10 } }
            """));
        Assert.Equal(1, r.ExitCode);
        var steps = r.Manifest!["steps"]!.AsArray().ToDictionary(s => s!["id"]!.GetValue<string>(), s => s!);
        Assert.Equal("succeeded", steps["del-ok"]["status"]!.GetValue<string>());
        Assert.Equal("failed", steps["del-strict"]["status"]!.GetValue<string>());
        Assert.Contains("expect 'auc_mean > 2' failed: auc_mean = ", steps["del-strict"]["error"]!.GetValue<string>());
        Assert.Equal("succeeded", steps["ins"]["status"]!.GetValue<string>());
        // The failing step's outputs were written before the expectation was checked.
        Assert.Contains(r.Manifest["artifacts"]!.AsArray(), a => a!["step"]!.GetValue<string>() == "del-strict");
        var csv = File.ReadAllLines(Path.Combine(r.OutDir!, "metrics.csv"));
        Assert.Equal("step,uses,of,metric,value,higher_is_better", csv[0]);
        Assert.Contains(csv, l => l.StartsWith("del-ok,deletion,sal,auc_mean,"));
        Assert.Contains(csv, l => l.StartsWith("ins,insertion,sal,auc_mean,"));
        var table = r.Manifest["metricsTable"]!.AsArray();
        Assert.Contains(table, t => t!["step"]!.GetValue<string>() == "ins" && t["of"]!.GetValue<string>() == "sal");
    }

    [Fact]
    public void AnUnparseableExpectationIsAValidationError()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: sal, uses: saliency }
              - { id: d, uses: deletion, with: { of: sal }, expect: ["auc_mean << 0.2"] }
              - { id: e, uses: deletion, with: { of: sal }, expect: ["auc_mean < low"] }
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("expect 'auc_mean << 0.2'") && e.Message.Contains("expected a number at position 11"));
        Assert.Contains(r.Errors, e => e.Message.Contains("expect 'auc_mean < low'") && e.Message.Contains("expected a number at position 12"));
    }

    [Fact]
    public void PointingGameUsesTheDataSourcesObjectMasks()
    {
        // threshold 1 (pixel > 1) makes the pixel-threshold fallback find no object at all; the placement source's masks still work.
        var dir = TestEnv.TempDir();
        var r = TestEnv.Run(TestEnv.Pipeline($"""
            version: 1
            model:
              uses: torchvision
              with: {"{"} architecture: fashion-cnn, weights: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "models", "fashion-cnn", "fashion-cnn.safetensors"))} {"}"}
              input: {"{"} size: [56, 56] {"}"}
            data:
              uses: fashion-placement
              with: {"{"} images: {TestEnv.Yaml(Path.Combine(TestEnv.Samples, "data", "fashion-mnist", "t10k-first500-images-idx3-ubyte.gz"))}, limit: 6, canvas: 56 {"}"}
            steps:
              - {"{"} id: sal, uses: saliency {"}"}
              - {"{"} id: point, uses: pointing-game, with: {"{"} of: sal, threshold: 1.0, tolerance: 0 {"}"} {"}"}
            """, dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var point = r.Manifest!["steps"]!.AsArray().Single(s => s!["id"]!.GetValue<string>() == "point")!;
        Assert.Null(point["warnings"]);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "point", "pointing.json")))!;
        Assert.Empty(json["skipped"]!.AsArray());
        Assert.Equal(6, json["inputs"]!.AsArray().Count);
    }
}
