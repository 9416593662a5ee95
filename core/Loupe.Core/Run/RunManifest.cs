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
        OptionsBinder.Properties(step.Options.GetType()).Where(p => p.PropertyType == typeof(StepLink))
            .Select(p => (p.GetValue(step.Options) as StepLink)?.Id).FirstOrDefault(x => x is not null);

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
