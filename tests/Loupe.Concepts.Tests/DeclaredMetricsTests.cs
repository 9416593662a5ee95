using Loupe.Analysis.Concepts;

namespace Loupe.Concepts.Tests;

/// <summary>dissection declares its metrics from the concept subfolders (<c>IDeclaresMetrics</c>): a misspelt
/// <c>expect:</c> line fails <c>loupe validate</c> before the dataset passes run, and the names declared are exactly the
/// ones a run writes.</summary>
public class DeclaredMetricsTests
{
    [Fact]
    public void TheDeclaredNamesAreTheOnesARunWritesAndATypoIsAValidationError()
    {
        var masks = Path.Combine(Env.Planted, "masks");
        var r = Env.Run(Env.PlantedPipeline($"""
              - id: dis
                uses: dissection
                with: {"{"} layer: relu2, masks: {masks}, quantile: 0.04 {"}"}
                expect: ['best_iou_stripes > 0']
            """));
        Env.Succeeded(r, "dis");
        var written = r.Manifest!["steps"]!.AsArray().First(s => (string?)s!["id"] == "dis")!["metrics"]!.AsObject().Select(kv => kv.Key).Order().ToList();
        var declared = new Dissection().MetricNamesFor(new DissectionOptions { Layer = "relu2", Masks = masks }, null!)!.Order().ToList();
        Assert.Equal(written, declared);
        Assert.Contains("best_iou_stripes", declared);

        var typo = Env.Run(Env.PlantedPipeline($"""
              - id: dis
                uses: dissection
                with: {"{"} layer: relu2, masks: {masks} {"}"}
                expect: ['best_iou_stripe > 0']
            """));
        Assert.Equal(2, typo.ExitCode);
        Assert.Contains(typo.Errors, e => e.Message.Contains("the step writes no metric 'best_iou_stripe'") && e.Message.Contains("did you mean 'best_iou_stripes'"));
    }
}
