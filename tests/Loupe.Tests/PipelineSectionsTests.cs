using System.Text.Json.Nodes;
using Loupe.Core;

namespace Loupe.Tests;

/// <summary>The pipeline's own sections are option records (PipelineSections.cs) bound by the plugins' binder: the
/// parser's allowed keys and the schema's properties come from the same declarations. Parser-only: no plugins, no run.</summary>
public class PipelineSectionsTests
{
    const string Valid = "version: 1\nmodel: { uses: x }\nsteps: [ { uses: y } ]\n";

    static PipelineException Refused(string yaml) => Assert.Throws<PipelineException>(() => PipelineParser.ParseText(yaml, "/p/p.yaml"));

    static List<string> Keys(Type record) => [.. OptionsBinder.Keys(record)];

    [Fact]
    public void Section_keys_are_the_records_properties()
    {
        Assert.Equal(["version", "name", "seed", "plugins", "model", "data", "steps", "output", "settings"], Keys(typeof(PipelineSection)));
        Assert.Equal(["id", "uses", "with", "target", "batch_size", "expect", "timeout", "display"], Keys(typeof(StepSection)));
        Assert.Equal(["batch_size", "threads", "memory_budget_mb", "max_image_pixels", "max_items", "step_timeout", "display", "top_k"], Keys(typeof(SettingsSection)));
        // An unknown key lists exactly those keys, with a suggestion, at the key's position.
        var e = Assert.Single(Refused(Valid + "settings: { batch_sise: 4 }\n").Errors);
        Assert.Equal("unknown key 'batch_sise' in settings (did you mean 'batch_size'?); allowed: " + string.Join(", ", Keys(typeof(SettingsSection))), e.Message);
        Assert.Equal((4, 13), (e.Line, e.Column));
        var top = Assert.Single(Refused(Valid + "setings: {}\n").Errors);
        Assert.Contains("unknown key 'setings' in pipeline", top.Message);
        Assert.Contains("did you mean 'settings'", top.Message);
        Assert.Equal((4, 1), (top.Line, top.Column));
    }

    [Fact]
    public void Section_values_are_bound_with_the_fields_named()
    {
        var spec = PipelineParser.ParseText(Valid + "name: demo\nseed: 7\nsettings: { batch_size: 3, memory_budget_mb: 2, step_timeout: 1500ms, top_k: 0, display: { opacity: 0.25 } }\n" +
                                            "output: { dir: 'out/{name}', report: html }\n", "/p/p.yaml");
        Assert.Equal(("demo", 7, 3, 2L << 20, 0), (spec.Name, spec.Seed, spec.BatchSize, spec.MemoryBudgetBytes, spec.TopK));
        Assert.Equal(TimeSpan.FromMilliseconds(1500), spec.StepTimeout);
        Assert.Equal(0.25, spec.Display!.Opacity);
        Assert.Equal(("out/{name}", "html"), (spec.OutputDir, spec.Report));
        // Defaults come from the records' initialisers.
        var plain = PipelineParser.ParseText(Valid, "/p/p.yaml");
        Assert.Equal(("pipeline", 16, 1L << 30, 5, "none", (TimeSpan?)null), (plain.Name, plain.BatchSize, plain.MemoryBudgetBytes, plain.TopK, plain.Report, plain.StepTimeout));

        var errs = Refused(Valid.Replace("{ uses: y }", "{ uses: y, id: s, batch_size: 0, timeout: soon }") + "settings: { top_k: -1, threads: many }\noutput: { report: pdf }\n").Errors.Select(e => e.Message).ToList();
        Assert.Contains("'steps.s.batch_size' must be > 0, got 0", errs);
        Assert.Contains(errs, m => m.StartsWith("'steps.s.timeout' must be a duration such as 30s"));
        Assert.Contains("'settings.top_k' must be ≥ 0, got -1", errs);
        Assert.Contains("'settings.threads' must be an integer, got 'many'", errs);
        Assert.Contains(errs, m => m.StartsWith("'output.report': 'pdf' is not one of none, html"));
        Assert.Equal(5, errs.Count);
        // A step without 'uses': named by its position, as before.
        Assert.Contains("step 1 is missing 'uses'", Refused(Valid.Replace("{ uses: y }", "{ id: s }")).Message);
    }

    /// <summary>A tagged key (<c>!!str name:</c>) is the same name, as the binder reads it; a tagged <c>version</c> or
    /// <c>name</c> with a bad value threw a NullReferenceException (tools/Loupe.Fuzz, corpus yaml/fuzz-tagged-key.yaml).</summary>
    [Fact]
    public void Tagged_keys_are_found_by_their_text()
    {
        var e = Assert.Single(Refused(Valid.Replace("version: 1\n", "!!binary version:\n")).Errors);
        Assert.Equal(("unsupported pipeline version '' (this Loupe reads version 1)", 1, 18), (e.Message, e.Line, e.Column));
        Assert.Contains("'name' may not contain", Assert.Single(Refused(Valid + "!!str name: a/b\n").Errors).Message);
        Assert.Equal("demo", PipelineParser.ParseText(Valid + "!!str name: demo\n", "/p/p.yaml").Name);
        // --set replaces the tagged key's value instead of adding a second 'name' beside it.
        Assert.Equal("other", PipelineParser.ParseText(Valid + "!!str name: demo\n", "/p/p.yaml", ["name=other"]).Name);
        Assert.Equal(3, PipelineParser.ParseText(Valid + "settings: { !!str batch_size: 2 }\n", "/p/p.yaml", ["settings.batch_size=3"]).BatchSize);
    }

    [Fact]
    public void The_schema_of_each_section_is_generated_from_its_record()
    {
        var schema = PipelineSchema.Generate([]);
        List<string> Props(JsonNode? o) => o!["properties"]!.AsObject().Select(p => p.Key).ToList();
        Assert.Equal(Keys(typeof(PipelineSection)), Props(schema));
        Assert.Equal(Keys(typeof(SettingsSection)), Props(schema["properties"]!["settings"]));
        Assert.Equal(Keys(typeof(OutputSection)), Props(schema["properties"]!["output"]));
        Assert.Equal(Keys(typeof(ModelSection)), Props(schema["properties"]!["model"]));
        Assert.Equal(Keys(typeof(StepSection)), Props(schema["$defs"]!["step"]));
        // Values: [AtLeast] → minimum, initialisers → default, [Required] → required, descriptions from [Description].
        var batch = schema["properties"]!["settings"]!["properties"]!["batch_size"]!;
        Assert.Equal((1L, 16L), (batch["minimum"]!.GetValue<long>(), batch["default"]!.GetValue<long>()));
        Assert.Equal("default batch size", batch["description"]!.GetValue<string>());
        Assert.Equal(["none", "html"], schema["properties"]!["output"]!["properties"]!["report"]!["enum"]!.AsArray().Select(v => v!.GetValue<string>()));
        Assert.Equal(["uses"], schema["$defs"]!["step"]!["required"]!.AsArray().Select(v => v!.GetValue<string>()));
    }
}
