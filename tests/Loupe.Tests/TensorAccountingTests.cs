using Loupe.Abstractions;
using Loupe.Core;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Loupe.Tests;

/// <summary>The live tensor count that the soak test and long runs rely on. Runs alone: the count is the process's,
/// and tests running beside it would move it.</summary>
[Collection("native heap")]
public class TensorAccountingTests
{
    static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    [Fact]
    public void TorchSharpCountsOneTensorTooManyPerParameter()
    {
        // Upstream behaviour that TensorAccounting corrects. If this fails, TorchSharp fixed it: remove the correction.
        Settle();
        long before = Tensor.TotalCount;
        for (int i = 0; i < 3; i++) new Parameter(zeros(4)).Dispose();
        Settle();
        Assert.Equal(before + 3, Tensor.TotalCount);
    }

    [Fact]
    public void ParametersMadeThroughTensorAccountingLeaveTheLiveCountUnchanged()
    {
        Settle();
        long before = TensorAccounting.Live;
        for (int i = 0; i < 3; i++) TensorAccounting.NewParameter(zeros(4)).Dispose();
        using (var m = TensorAccounting.Constructed(nn.Sequential(("a", nn.Conv2d(1, 2, 3)), ("b", nn.Linear(2, 2))))) { }
        Settle();
        Assert.Equal(before, TensorAccounting.Live);
    }

    [Fact]
    public void RepeatedQuickstartRunsInOneProcessLeaveNoLiveTensors()
    {
        var pipeline = Path.Combine(TestEnv.RepoRoot, "configs", "quickstart.yaml");
        var dir = TestEnv.TempDir();
        Settle();
        long before = TensorAccounting.Live, movedBefore = TensorAccounting.MovedIntoParameters;
        for (int run = 0; run < 3; run++)
        {
            var result = PipelineRunner.Run(new RunRequest(pipeline) { PluginDirectories = [TestEnv.PluginDirectory], OutDir = Path.Combine(dir, $"run-{run}") });
            Assert.True(result.ExitCode == 0, string.Join("; ", result.Errors));
        }
        Settle();
        Assert.True(TensorAccounting.MovedIntoParameters > movedBefore, "the demo model's construction was not recorded");
        Assert.Equal(before, TensorAccounting.Live);
    }
}
