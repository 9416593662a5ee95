using Loupe.Analysis.Synthesis;

namespace Loupe.Synthesis.Tests;

/// <summary>activation-max declares the metrics it writes (<c>IDeclaresMetrics</c>), so <c>expect:</c> lines are checked by
/// <c>loupe validate</c>: the names declared for a step's options are exactly the ones its run writes.</summary>
public class DeclaredMetricsTests
{
    [Fact]
    public void TheDeclaredNamesAreTheOnesARunWrites()
    {
        var r = Env.Run(Env.DemoPipeline("""
              - id: two
                uses: activation-max
                with: { objectives: ['relu3:5', 'class:3'], batch: 2, diversity: 1, diversity_layer: relu2, alignment: 1, alignment_layer: relu2, steps: 2 }
                expect: ['00-relu3-5-1.final > -1e9', 'misalignment >= 0']
              - id: one
                uses: activation-max
                with: { objective: 'relu3:5', steps: 2 }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        var steps = r.Manifest!["steps"]!.AsArray();
        foreach (var (id, options) in new[]
        {
            ("two", new ActivationMaxOptions { Objectives = ["relu3:5", "class:3"], Batch = 2, Diversity = 1, DiversityLayer = "relu2", Alignment = 1, AlignmentLayer = "relu2" }),
            ("one", new ActivationMaxOptions { Objective = "relu3:5" }),
        })
        {
            var written = steps.First(s => (string?)s!["id"] == id)!["metrics"]!.AsObject().Select(kv => kv.Key).Order().ToList();
            var declared = new ActivationMax().MetricNamesFor(options, null!)!.Order().ToList();
            Assert.Equal(written, declared);
        }
    }

    [Fact]
    public void AMisspeltExpectationFailsValidationAndEveryClassIsCheckedAfterTheRun()
    {
        var r = Env.Run(Env.DemoPipeline("""
              - id: am
                uses: activation-max
                with: { objectives: ['relu3:5', 'relu3:6'], alignment: 1, alignment_layer: relu2, steps: 2 }
                expect: ['misalignmnet < 1']
            """));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(r.Errors, e => e.Message.Contains("the step writes no metric 'misalignmnet'") && e.Message.Contains("misalignment"));
        Assert.Null(new ActivationMax().MetricNamesFor(new ActivationMaxOptions { Class = "*" }, null!));
    }
}
