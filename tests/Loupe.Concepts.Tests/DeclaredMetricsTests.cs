using Loupe.Abstractions;
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

    [Fact]
    public void TcavDeclaresItsConceptsTimesTheRunsClassLabels()
    {
        // classes given: the names written are exactly those declared; a misspelt class fails validation, named.
        var r = Env.Run(Env.PlantedPipeline($"""
              - id: tcav
                uses: tcav
                with: {"{"} layer: pool2, concepts: {Env.Planted}/concepts, random: {Env.Planted}/random, classes: [striped, plain] {"}"}
                expect: ['tcav_stripes_striped >= 0']
            """));
        Env.Succeeded(r, "tcav");
        var written = r.Manifest!["steps"]!.AsArray().First(s => (string?)s!["id"] == "tcav")!["metrics"]!.AsObject().Select(kv => kv.Key).Order().ToList();
        var labels = File.ReadAllLines(Path.Combine(Env.Planted, "labels.txt")).Where(l => l.Trim().Length > 0).ToList();
        var context = new AnalysisValidationContext([], ModelCapabilities.Forward, null!) { Labels = labels };
        IDeclaresMetrics tcav = new Tcav();
        var options = new TcavOptions { Layer = "pool2", Concepts = Path.Combine(Env.Planted, "concepts"), Random = Path.Combine(Env.Planted, "random"), Classes = ["striped", "plain"] };
        Assert.Equal(written, tcav.MetricNamesFor(options, context)!.Order().ToList());
        Assert.Contains("tcav_stripes_striped", written);
        // Every labelled class without 'classes' (those with inputs are written); no labels: checked after the run.
        Assert.Equal(3 * labels.Count, tcav.MetricNamesFor(options with { Classes = null }, context)!.Count);
        Assert.Null(tcav.MetricNamesFor(options, context with { Labels = null }));

        var typo = Env.Run(Env.PlantedPipeline($"""
              - id: tcav
                uses: tcav
                with: {"{"} layer: pool2, concepts: {Env.Planted}/concepts, random: {Env.Planted}/random {"}"}
                expect: ['tcav_stripes_stripd > 0.5']
            """));
        Assert.Equal(2, typo.ExitCode);
        Assert.Contains(typo.Errors, e => e.Message.Contains("the step writes no metric 'tcav_stripes_stripd'") && e.Message.Contains("did you mean 'tcav_stripes_striped'"));
    }
}
