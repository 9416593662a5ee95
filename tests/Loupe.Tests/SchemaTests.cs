using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using Loupe.Core;
using YamlDotNet.RepresentationModel;

namespace Loupe.Tests;

/// <summary>The JSON Schema of pipeline files (<c>loupe schema</c>, committed as configs/loupe.schema.json).</summary>
public class SchemaTests
{
    static readonly string Committed = Path.Combine(TestEnv.RepoRoot, "configs", "loupe.schema.json");

    static readonly Lazy<string> Generated = new(() =>
    {
        using var registry = ComponentRegistry.Load([TestEnv.PluginDirectory]);
        return PipelineSchema.ToText(PipelineSchema.Generate(registry.Components));
    });

    static readonly Lazy<JsonSchema> Schema = new(() => JsonSchema.FromText(Generated.Value));

    static EvaluationResults Evaluate(string yamlFile) =>
        Schema.Value.Evaluate(JsonSerializer.SerializeToElement(YamlToJson(yamlFile)), new EvaluationOptions { OutputFormat = OutputFormat.List });

    [Fact]
    public void TheCommittedSchemaIsTheGeneratedOne()
    {
        Assert.True(File.Exists(Committed), "configs/loupe.schema.json is missing: run `loupe schema --out configs/loupe.schema.json`");
        Assert.True(File.ReadAllText(Committed) == Generated.Value,
            "configs/loupe.schema.json is stale: regenerate it with `loupe schema --out configs/loupe.schema.json`");
        // Every registered component is in it, with its options.
        var defs = JsonNode.Parse(Generated.Value)!["$defs"]!.AsObject();
        var window = defs["analysis.occlusion"]!["properties"]!["window"]!;   // one value or [h, w], each in [1, 4096]
        Assert.Equal("integer", window["anyOf"]![1]!["type"]!.GetValue<string>());
        Assert.Equal(1, window["anyOf"]![0]!["items"]!["minimum"]!.GetValue<int>());
        Assert.Equal(8, window["default"]![0]!.GetValue<int>());
        // fill: a named fill or a constant (one value or a per-channel list); integrated-gradients takes it as an alias of baseline.
        var fill = defs["analysis.occlusion"]!["properties"]!["fill"]!["anyOf"]!;
        Assert.Equal(["zero", "mean", "blur", "black"], fill[0]!["enum"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.Equal("number", fill[1]!["anyOf"]![0]!["items"]!["type"]!.GetValue<string>());
        var ig = defs["analysis.integrated-gradients"]!["properties"]!.AsObject();
        Assert.Equal(ig["baseline"]!.ToJsonString(), ig["fill"]!.ToJsonString());
        Assert.Contains("weights", defs["model.torchvision"]!["properties"]!.AsObject().Select(p => p.Key));
        Assert.Contains("layer", defs["analysis.filters"]!["required"]!.AsArray().Select(r => r!.GetValue<string>()));
    }

    [Fact]
    public void EveryShippedConfigValidatesAndPointsEditorsAtTheSchema()
    {
        var configs = Directory.GetFiles(Path.Combine(TestEnv.RepoRoot, "configs"), "*.yaml");
        Assert.NotEmpty(configs);
        foreach (var config in configs)
        {
            Assert.Equal("# yaml-language-server: $schema=loupe.schema.json", File.ReadLines(config).First());
            var result = Evaluate(config);
            Assert.True(result.IsValid, $"{config}:\n{Errors(result)}");
        }
    }

    [Fact]
    public void AWrongPipelineFailsSchemaValidation()
    {
        var quickstart = File.ReadAllText(Path.Combine(TestEnv.RepoRoot, "configs", "quickstart.yaml"));
        var dir = TestEnv.TempDir("loupe-schema");
        (string Edit, string Expect)[] cases =
        [
            ("with: { window: 4, stride: 2, fill: zero }|with: { window: 4, strides: 2, fill: zero }", "strides"),   // unknown option
            ("with: { window: 4, stride: 2, fill: zero }|with: { window: four, stride: 2, fill: zero }", "window"),  // wrong type
            ("with: { window: 4, stride: 2, fill: zero }|with: { window: 4, stride: 2, fill: grey }", "fill"),      // bad enum
            ("with: { window: 4, stride: 2, fill: zero }|with: { window: 0, stride: 2, fill: zero }", "window"),    // below [Range]
            ("uses: filters\n    with: { layer: conv1 }|uses: filters", "with"),                                      // required option missing
            ("uses: occlusion|uses: oclusion", "uses"),                                                               // unknown technique
            ("limit: 32|limt: 32", "limt"),                                                                           // data option typo
            ("steps:|stepz:", "stepz"),                                                                               // unknown top-level key
        ];
        foreach (var (edit, expect) in cases)
        {
            var (from, to) = (edit.Split('|')[0], edit.Split('|')[1]);
            Assert.Contains(from, quickstart);
            var file = Path.Combine(dir, "wrong.yaml");
            File.WriteAllText(file, quickstart.Replace(from, to));
            var result = Evaluate(file);
            Assert.False(result.IsValid, $"'{to}' passed the schema");
            Assert.Contains(expect, Errors(result));
        }
        // Targets: ids and one-key mappings.
        File.WriteAllText(Path.Combine(dir, "targets.yaml"), quickstart.Replace("uses: saliency", "uses: saliency\n    target: { class: sneaker }"));
        Assert.True(Evaluate(Path.Combine(dir, "targets.yaml")).IsValid);
        File.WriteAllText(Path.Combine(dir, "targets.yaml"), quickstart.Replace("uses: saliency", "uses: saliency\n    target: { klass: 3 }"));
        Assert.False(Evaluate(Path.Combine(dir, "targets.yaml")).IsValid);
    }

    /// <summary>Failed locations and messages (evaluation path, instance location, errors), one per line.</summary>
    static string Errors(EvaluationResults r) => string.Join("\n", (r.Details ?? []).Where(d => d.Errors is { Count: > 0 })
        .Select(d => $"{d.InstanceLocation} ({d.EvaluationPath}): {string.Join("; ", d.Errors!.Values)}"));

    /// <summary>YAML → JSON with YAML 1.2 core-schema scalars (what editors' YAML servers do): plain true/false, null,
    /// integers and floats are typed; quoted scalars stay strings.</summary>
    static JsonNode? YamlToJson(string file)
    {
        var stream = new YamlStream();
        using (var reader = new StringReader(File.ReadAllText(file))) stream.Load(reader);
        return Convert(stream.Documents[0].RootNode);

        static JsonNode? Convert(YamlNode node) => node switch
        {
            YamlMappingNode m => new JsonObject(m.Children.Select(kv => KeyValuePair.Create(((YamlScalarNode)kv.Key).Value!, Convert(kv.Value)))),
            YamlSequenceNode s => new JsonArray(s.Children.Select(Convert).ToArray()),
            YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain } p => Plain(p.Value ?? ""),
            YamlScalarNode q => JsonValue.Create(q.Value ?? ""),
            _ => throw new InvalidOperationException($"unsupported YAML node {node.GetType().Name}"),
        };

        static JsonNode? Plain(string v)
        {
            if (v is "" or "~" or "null" or "Null" or "NULL") return null;
            if (v is "true" or "True" or "TRUE") return true;
            if (v is "false" or "False" or "FALSE") return false;
            if (System.Text.RegularExpressions.Regex.IsMatch(v, "^[-+]?[0-9]+$") && long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l)) return l;
            if (System.Text.RegularExpressions.Regex.IsMatch(v, @"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")) return double.Parse(v, CultureInfo.InvariantCulture);
            return v;
        }
    }
}
