using System.ComponentModel;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Testing;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;

namespace Loupe.Library.Tests;

/// <summary>Options of the test's third-party technique: the two ways an option names another step.</summary>
public sealed record MapsOfReferencesOptions
{
    /// <summary>Another step of the pipeline.</summary>
    [Description("id of a step whose maps this step recomputes")]
    public StepLink? Of { get; init; }
    /// <summary>A step described in place.</summary>
    [Description("a step described in place whose maps this step computes: { uses, with }")]
    public StepReference? Inner { get; init; }
}

/// <summary>A plugin author's technique that uses other steps: it reaches them only through its contexts'
/// <c>Referenced</c> (its options hold what the YAML said), checks them when validated and recomputes their maps.</summary>
public sealed class MapsOfReferences : Analysis<MapsOfReferencesOptions>
{
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);

    static IEnumerable<(string Name, IStepReference? Reference)> References(MapsOfReferencesOptions o) => [("of", o.Of), ("inner", o.Inner)];

    public override IEnumerable<string> Validate(MapsOfReferencesOptions options, AnalysisValidationContext context)
    {
        foreach (var (name, reference) in References(options))
            if (context.Referenced(reference) is { Analysis: not IAttribution } step)
                yield return $"option '{name}': step '{step.Id}' ({step.Uses}) makes no maps";
    }

    public override void Run(MapsOfReferencesOptions options, IAnalysisContext ctx)
    {
        foreach (var batch in ctx.Batches())
        {
            using var scope = NewDisposeScope();
            foreach (var (name, reference) in References(options).Where(r => r.Reference is not null))
            {
                var step = ctx.Referenced(reference!);
                var maps = ((IAttribution)step.Analysis).Attribute(step.Options, new AttributionInput(ctx, batch.Input, null, 0, batch.Ids)).Map;
                for (int i = 0; i < batch.Ids.Length; i++) ctx.Output.Raw(name, batch.Ids[i], NdArray.FromTensor(maps[i]));
            }
        }
        ctx.Output.Json("references", References(options).Where(r => r.Reference is not null)
            .ToDictionary(r => r.Name, r => ctx.Referenced(r.Reference!) is var s ? new[] { s.Id, s.Uses } : null));
    }
}

public sealed class MapsOfReferencesRegistrar : IPluginRegistrar
{
    public void Register(IServiceCollection services) =>
        services.AddLoupeAnalysis<MapsOfReferences>("maps-of-references", "recomputes the maps of the steps its options name");
}

/// <summary>Step references through the in-process API, as a plugin author uses them: a technique registered by the test
/// names another step (<c>of:</c>) and a step in place (<c>inner:</c>) and gets them, resolved, from its contexts; the
/// maps it recomputes are checked against the PyTorch references of those steps (tests/fixtures, make_fixtures.py).</summary>
[Collection("library")]
public class StepReferenceApiTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", name);

    static string Pipeline(string steps) => $$"""
        version: 1
        name: references
        model:
          uses: torchvision
          with: { architecture: fashion-cnn, weights: {{RepoPaths.Yaml(Fixture("fashion_cnn_seed0.safetensors"))}} }
        data:
          uses: npy
          with: { path: {{RepoPaths.Yaml(Fixture("fashion_input.npy"))}} }
        settings: { threads: 1, batch_size: 3 }
        steps:
        {{steps}}
        """;

    static PipelineOptions Options() => new()
    {
        PluginDirectories = [RepoPaths.BuiltInPlugins], Registrars = [new MapsOfReferencesRegistrar()],
        OutDir = Path.Combine(RepoPaths.TempDir("loupe-refs"), "out"),
    };

    static float[] Stack(string dir, IEnumerable<string> ids, string name) =>
        ids.SelectMany(id => Npy.Read(Path.Combine(dir, $"{id}.{name}.npy")).Data).ToArray();

    static void Close(float[] actual, string fixture)
    {
        var err = Numbers.RelL2(actual, Npy.Read(Fixture(fixture)).Data);
        Assert.True(err <= 1e-4, $"{fixture}: relative L2 error {err:E2} > 1E-04");
    }

    [Fact]
    public void A_third_party_step_reaches_the_steps_its_options_name_through_its_context()
    {
        var run = Pipelines.RunYaml(Pipeline("""
              - { id: sal, uses: saliency }
              - id: probe
                uses: maps-of-references
                with: { of: sal, inner: { uses: grad-cam, with: { layer: relu3 } } }
            """), RepoPaths.TempDir("loupe-refs-base"), Options());
        Assert.True(run.ExitCode == 0, string.Join("\n", run.Errors) + run.Manifest?.ToJsonString());
        var ids = Enumerable.Range(0, 4).Select(i => i.ToString("D5")).ToList();
        var probe = Path.Combine(run.OutDir!, "probe");
        // of: the linked step's analysis and options, recomputed batch by batch: its own maps, and PyTorch's.
        var of = Stack(probe, ids, "of");
        Assert.True(Numbers.RelL2(of, Stack(Path.Combine(run.OutDir!, "sal"), ids, "saliency")) <= 1e-6);
        Close(of, "fashion_saliency.npy");
        // inner: bound from the step's YAML by the host (layer relu3), run with the probe's context.
        Close(Stack(probe, ids, "inner"), "fashion_gradcam_up.npy");
        var refs = JsonNode.Parse(File.ReadAllText(Path.Combine(probe, "references.json")))!;
        Assert.Equal("""{"of":["sal","saliency"],"inner":["probe/inner","grad-cam"]}""", refs.ToJsonString());
        // The manifest keeps the options as bound, the in-place step with the options the plan bound for it.
        var rec = run.Manifest!["steps"]!.AsArray().Single(s => (string?)s!["id"] == "probe")!;
        Assert.Equal("sal", (string?)rec["of"]);
        Assert.Equal("sal", (string?)rec["options"]!["of"]!["id"]);
        Assert.Equal("grad-cam", (string?)rec["options"]!["inner"]!["uses"]);
        Assert.Equal("relu3", (string?)rec["options"]!["inner"]!["options"]!["layer"]);
    }

    [Fact]
    public void Validation_sees_the_resolved_steps()
    {
        var run = Pipelines.RunYaml(Pipeline("""
              - { id: weights, uses: filters, with: { layer: conv1 } }
              - { id: probe, uses: maps-of-references, with: { of: weights } }
            """), RepoPaths.TempDir("loupe-refs-base"), Options());
        Assert.Equal(2, run.ExitCode);
        Assert.Contains(run.Errors, e => e.Message.EndsWith("step 'probe' (maps-of-references): option 'of': step 'weights' (filters) makes no maps"));
    }

    [Fact]
    public void A_step_in_place_resolves_in_a_one_step_explanation()
    {
        using var model = LoupeModel.Load("torchvision", new { architecture = "fashion-cnn", weights = Fixture("fashion_cnn_seed0.safetensors") },
            new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins], Registrars = [new MapsOfReferencesRegistrar()], Threads = 1, BatchSize = 3 });
        var e = model.Explain("maps-of-references", Npy.Read(Fixture("fashion_input.npy")), new { inner = new { uses = "grad-cam", with = new { layer = "relu3" } } });
        Close(e.InputIds.SelectMany(id => e.Artifacts.Single(a => a.InputId == id && a.Name == "inner" && a.Kind == ArtifactKind.Raw).Array!.Data).ToArray(),
            "fashion_gradcam_up.npy");
    }
}
