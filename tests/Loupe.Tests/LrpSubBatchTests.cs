namespace Loupe.Tests;

/// <summary><c>lrp</c> splits a batch that the memory budget does not hold (or at <c>internal_batch_size</c>): the maps
/// equal the unsplit ones, and the PyTorch reference (tests/fixtures/make_lrp_fixtures.py).</summary>
public class LrpSubBatchTests
{
    [Fact]
    public void SplitBatchesGiveTheUnsplitMaps()
    {
        var path = TestEnv.FixturePipeline("""
              - { id: whole, uses: lrp, with: { composite: epsilon-gamma-box, internal_batch_size: 4 } }
              - { id: ones, uses: lrp, with: { composite: epsilon-gamma-box, internal_batch_size: 1 } }
              - { id: threes, uses: lrp, with: { composite: epsilon-gamma-box, internal_batch_size: 3 } }
              - { id: budget, uses: lrp, with: { composite: epsilon-gamma-box } }
            """, batchSize: 4);
        // 1 MiB holds one demo-CNN input (its activations ×3 for the relevance pass): the default splits into rows.
        File.WriteAllText(path, File.ReadAllText(path).Replace("settings: { batch_size: 4 }", "settings: { batch_size: 4, memory_budget_mb: 1 }"));
        var r = TestEnv.Run(path);
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        Assert.All(r.Manifest!["steps"]!.AsArray(), s => Assert.True(s!["liveTensorDelta"]!.GetValue<long>() == 0, $"{s["id"]}: {s["liveTensorDelta"]}"));
        var whole = TechniqueTests.Stack(r, "whole", "lrp");
        TechniqueTests.Close(whole, "lrp_cnn_epsilon-gamma-box.npy", 1e-4);
        foreach (var id in new[] { "ones", "threes", "budget" })
        {
            var split = TechniqueTests.Stack(r, id, "lrp");
            Assert.Equal(whole.Length, split.Length);
            Assert.True(TestEnv.RelL2(split, whole) <= 1e-6, $"{id}: {TestEnv.RelL2(split, whole):E2}");
        }
    }
}
