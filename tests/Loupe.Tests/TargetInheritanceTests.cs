using Loupe.Testing;

namespace Loupe.Tests;

/// <summary>A metric step without a <c>target:</c> explains the target of the step it evaluates (until 2026-12-06 it
/// took top-1, so a method explaining class 3 was scored on another explanation: its top-1 maps, recomputed).</summary>
public class TargetInheritanceTests
{
    [Fact]
    public void AMetricExplainsTheTargetOfTheStepItEvaluates()
    {
        var r = TestEnv.Run(TestEnv.FixturePipeline("""
              - { id: sal, uses: saliency, target: { class: 3 } }
              - { id: inherited, uses: deletion, with: { of: sal, steps: 10 } }
              - { id: same, uses: deletion, with: { of: sal, steps: 10 }, target: { class: 3 } }
              - { id: own, uses: deletion, with: { of: sal, steps: 10 }, target: top-1 }
              - { id: top, uses: saliency }
              - { id: default, uses: deletion, with: { of: top, steps: 10 } }
            """));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors));
        string Target(string id) => HostRuns.Step(r, id)["target"]!.GetValue<string>();
        Assert.Equal(Target("sal"), Target("inherited"));
        Assert.Equal(Target("same"), Target("inherited"));
        Assert.Equal(Target("top"), Target("own"));
        Assert.Equal(Target("top"), Target("default"));
        Assert.NotEqual(Target("sal"), Target("own"));
        Assert.Equal(HostRuns.Metric(r, "same", "auc_mean"), HostRuns.Metric(r, "inherited", "auc_mean"));
        Assert.NotEqual(HostRuns.Metric(r, "own", "auc_mean"), HostRuns.Metric(r, "inherited", "auc_mean"));
    }

    [Fact]
    public void A_wrong_target_is_reported_once_by_its_step_not_again_by_the_steps_that_inherit_it()
    {
        // Both passes: with the other steps valid, and beside an option error (the one-pass checks).
        foreach (var extra in new[] { "", "\n  - { id: typo, uses: saliency, with: { reduce: maxx } }" })
        {
            var r = TestEnv.Run(TestEnv.FixturePipeline("""
                  - { id: sal, uses: saliency, target: { class: 42 } }
                  - { id: del, uses: deletion, with: { of: sal, steps: 10 } }
                  - { id: sp, uses: sparseness, with: { of: del2 } }
                  - { id: del2, uses: deletion, with: { of: sal, steps: 10 } }
                """ + extra));
            Assert.Equal(2, r.ExitCode);
            var targetErrors = r.Errors.Where(e => e.Message.Contains("class index 42")).ToList();
            Assert.True(targetErrors.Count == 1, string.Join("\n", r.Errors));
            Assert.Contains("step 'sal' target: class index 42 is out of range", targetErrors[0].Message);
        }
    }
}
