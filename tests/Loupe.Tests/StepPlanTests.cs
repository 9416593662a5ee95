using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>Step references live in the run's plan (<see cref="PreparedStep.References"/>): options stay what the YAML
/// bound, and the steps they name — in place (<c>inner:</c>, nested) or by id (<c>of:</c>, with the linked step's own
/// references) — are resolved per step.</summary>
public class StepPlanTests
{
    const string Steps = """
          - { id: saliency, uses: saliency }
          - id: smooth
            uses: noise-tunnel
            with: { inner: { uses: saliency, with: { reduce: max } }, samples: 2 }
          - id: aug
            uses: aug-smooth
            with: { inner: { uses: noise-tunnel, with: { inner: { uses: saliency }, samples: 2 } }, factors: [1] }
          - { id: smooth-deletion, uses: deletion, with: { of: smooth, steps: 4 } }

        """;

    static string Json(object options) => Manifest.ToNode(options)!.ToJsonString();

    static IEnumerable<System.Reflection.PropertyInfo> ReferenceOptions(object options) =>
        OptionsBinder.Properties(options.GetType()).Where(p => typeof(IStepReference).IsAssignableFrom(p.PropertyType));

    [Fact]
    public void Binding_twice_gives_equal_options_and_the_references_live_in_the_plan()
    {
        var file = TestEnv.FixturePipeline(Steps);
        PreparedRun Prepare() => PipelineRunner.Prepare(new RunRequest(file) { PluginDirectories = [TestEnv.PluginDirectory] });
        using var a = Prepare();
        using var b = Prepare();
        var spec = PipelineParser.Parse(file);
        for (int i = 0; i < a.Steps.Count; i++)
        {
            var (x, y) = (a.Steps[i].Options, b.Steps[i].Options);
            // A plain binding of the step's with:, without the registry: what preparing must leave untouched.
            var errors = new List<PipelineError>();
            var bound = OptionsBinder.Bind(x.GetType(), spec.Steps[i].With, file, "test", spec.BaseDirectory, errors, spec.Steps[i].Mark).Value;
            Assert.Empty(errors);
            Assert.Equal(Json(bound), Json(x));
            Assert.Equal(Json(x), Json(y));
            foreach (var p in ReferenceOptions(x))
            {
                Assert.NotNull(p.GetValue(x));
                Assert.Equal(p.GetValue(bound), p.GetValue(x));   // records: id, or uses and the with: as written
                Assert.Equal(p.GetValue(x), p.GetValue(y));
            }
        }
        // noise-tunnel's options hold no arrays: the whole record compares by value.
        Assert.Equal(a.Steps[1].Options, b.Steps[1].Options);
        Assert.NotSame(a.Steps[1].Options, b.Steps[1].Options);

        Assert.Empty(a.Steps[0].References);
        var smooth = a.Steps[1];
        var inner = Assert.Single(smooth.References);
        Assert.Equal(("smooth/inner", "saliency", "Inner", (PreparedStep?)null), (inner.Step.Id, inner.Step.Uses, inner.OptionPath, inner.Entry));
        Assert.Equal("Saliency", inner.Step.Analysis.GetType().Name);
        Assert.Equal("max", JsonNode.Parse(Json(inner.Step.Options))!["reduce"]!.GetValue<string>());
        Assert.Equal(Json(inner.Step.Options), Json(b.Steps[1].References[0].Step.Options));
        var innerOption = (IStepReference)ReferenceOptions(smooth.Options).Single().GetValue(smooth.Options)!;
        Assert.Same(inner.Step, smooth.Resolved.Of(innerOption));

        // Nested in place: depth first, each with its option path and an id under the step's.
        var aug = a.Steps[2];
        Assert.Equal([("Inner", "aug/inner", "noise-tunnel"), ("Inner.Inner", "aug/inner/inner", "saliency")],
            aug.References.Select(r => (r.OptionPath, r.Step.Id, r.Step.Uses)));
        Assert.Equal(2, JsonNode.Parse(Json(aug.References[0].Step.Options))!["samples"]!.GetValue<int>());

        // A link: the linked step's plan entry (its very analysis and options), then that step's own references.
        var deletion = a.Steps[3];
        Assert.Equal([("Of", "smooth"), (null, "smooth/inner")], deletion.References.Select(r => (r.OptionPath, r.Step.Id)));
        Assert.Same(smooth, deletion.References[0].Entry);
        Assert.Same(smooth.Analysis, deletion.References[0].Step.Analysis);
        Assert.Same(smooth.Options, deletion.References[0].Step.Options);
        Assert.Same(inner.Step, deletion.References[1].Step);
        Assert.Same(inner.Step, deletion.Resolved.Of(innerOption));
        Assert.Same(deletion.References[0].Step, deletion.Resolved.Of(new StepLink { Id = "smooth" }));
    }

    [Fact]
    public void An_unresolved_reference_is_named()
    {
        var e = Assert.Throws<LoupeException>(() => StepReferences.None.Of(new StepLink { Id = "saliency" }));
        Assert.Equal("the step 'saliency' named by an option was not resolved by the host (resolved: none)", e.Message);
        Assert.Null(new AnalysisValidationContext([], ModelCapabilities.Forward, null!).Referenced(new StepReference { Uses = "saliency" }));
        var table = new StepReferences([KeyValuePair.Create<IStepReference, ReferencedStep>(new StepLink { Id = "a" }, new("a", "saliency", null!, new object()))]);
        Assert.Equal("a", table.Of(new StepLink { Id = "a" }).Id);   // compared by value
        Assert.Contains("(resolved: a)", Assert.Throws<LoupeException>(() => table.Of(new StepLink { Id = "b" })).Message);
    }
}
