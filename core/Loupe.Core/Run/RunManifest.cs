using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using TorchSharp;

namespace Loupe.Core;

/// <summary>The manifest skeleton of a run and the step records' links.</summary>
public static partial class PipelineRunner
{
    /// <summary>The id of the step a step's <see cref="StepLink"/> option names (e.g. a metric's <c>of:</c>), or null.</summary>
    static string? LinkedStep(PreparedStep step) =>
        step.References.FirstOrDefault(r => r.OptionPath is not null && r.Entry is not null)?.Step.Id;

    /// <summary>A step's options for its manifest record: as bound, with each step it describes in place
    /// (<c>inner: { uses, with }</c>) written as <c>{ uses, options }</c>, its options as the plan bound them.</summary>
    static JsonNode? StepOptions(PreparedStep step)
    {
        var node = Manifest.ToNode(step.Options);
        var naming = Manifest.JsonOptions.PropertyNamingPolicy!;
        foreach (var r in step.References.Where(r => r.OptionPath is not null && r.Entry is null).OrderBy(r => r.OptionPath!.Count(c => c == '.')))
        {
            var path = r.OptionPath!.Split('.');
            var at = node;
            foreach (var name in path[..^1]) at = ((at as JsonObject)?[naming.ConvertName(name)] as JsonObject)?["options"];
            if ((at as JsonObject)?[naming.ConvertName(path[^1])] is JsonObject written) written["options"] = Manifest.ToNode(r.Step.Options);
        }
        return node;
    }

    static JsonObject BuildManifest(PreparedRun run, RunRequest request, DateTimeOffset started)
    {
        var spec = run.Spec;
        JsonArray Files(IEnumerable<string> files) => new(files.Select(f => (JsonNode)new JsonObject
        {
            ["path"] = f, ["sha256"] = File.Exists(f) ? PluginHost.Sha256File(f) : null,
        }).ToArray());
        return new JsonObject
        {
            ["loupe"] = typeof(PipelineRunner).Assembly.GetName().Version?.ToString(3),
            ["runId"] = Guid.NewGuid().ToString("N"),
            ["status"] = "running",
            ["startedAt"] = started.ToString("o"),
            ["pipelineFile"] = spec.File,
            // A pipeline given as text (the library's Pipelines.RunYaml) has no file: its text is hashed.
            ["pipelineSha256"] = request.PipelineText is { } text
                ? Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text))).ToLowerInvariant()
                : PluginHost.Sha256File(spec.File),
            ["overrides"] = new JsonArray(request.Overrides.Select(o => (JsonNode)JsonValue.Create(o)!).ToArray()),
            ["pipeline"] = Manifest.FromYaml(spec.Root),
            ["seed"] = spec.Seed,
            ["environment"] = new JsonObject
            {
                ["dotnet"] = Environment.Version.ToString(),
                ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
                ["torchSharp"] = typeof(torch).Assembly.GetName().Version?.ToString(),
                ["threads"] = torch.get_num_threads(),
                ["contract"] = LoupeContract.Version,
                ["plugins"] = JsonSerializer.SerializeToNode(run.Registry.Plugins, Manifest.JsonOptions),
            },
            ["model"] = new JsonObject
            {
                ["uses"] = spec.Model!.Uses,
                ["options"] = Manifest.ToNode(run.ModelOptions),
                ["input"] = JsonSerializer.SerializeToNode(run.Input, Manifest.JsonOptions),
                ["labels"] = new JsonArray(run.Labels.Select(l => (JsonNode)JsonValue.Create(l)!).ToArray()),
                ["files"] = Files(run.ModelFiles),
            },
            ["data"] = run.Data is null ? null : new JsonObject
            {
                ["uses"] = spec.Data!.Uses,
                ["options"] = Manifest.ToNode(run.DataOptions!),
                ["count"] = run.Data.Count,
                ["files"] = Files(run.Data.Files),
            },
            ["warnings"] = new JsonArray(run.Warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray()),
            // Cold start: from the process start (runtime start-up included) to the end of the first model forward.
            ["coldStartMs"] = run.FirstForwardAt is { } ff ? Math.Round((ff - new DateTimeOffset(System.Diagnostics.Process.GetCurrentProcess().StartTime)).TotalMilliseconds, 1) : null,
        };
    }
}
