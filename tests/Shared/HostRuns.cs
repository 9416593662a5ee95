using System.Diagnostics;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Testing;

/// <summary>Runs through the real host, in-process or as the CLI, and reads what a run wrote: the helpers every test
/// project's environment class used to copy.</summary>
public static class HostRuns
{
    /// <summary>The CLI's entry assembly.</summary>
    public static string CliDll => Path.Combine(RepoPaths.CliDirectory, "loupe.dll");

    /// <summary>Runs a pipeline in-process with the built-in plugins (and <paramref name="registrars"/>, components
    /// registered by the test itself) into <paramref name="outDir"/> (default: <c>out</c> beside the pipeline).</summary>
    public static RunResult Run(string pipeline, string? outDir = null, IReadOnlyList<string>? overrides = null, IReadOnlyList<IPluginRegistrar>? registrars = null) =>
        PipelineRunner.Run(new RunRequest(pipeline)
        {
            OutDir = outDir ?? Path.Combine(Path.GetDirectoryName(pipeline)!, "out"),
            PluginDirectories = [RepoPaths.BuiltInPlugins],
            Overrides = overrides ?? [],
            Registrars = registrars ?? [],
        });

    /// <summary>Runs the CLI as a separate process (no colours) and returns its exit code and output.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Cli(string workingDirectory, int timeoutSeconds, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000)) { p.Kill(true); throw new TimeoutException($"loupe CLI did not finish in {timeoutSeconds} s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs <c>dotnet</c> (build, pack, test, run) and returns its output; fails the test when it fails.</summary>
    public static string Dotnet(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args.Append("-nologo")) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync(); var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(600_000)) { p.Kill(true); throw new TimeoutException("dotnet " + string.Join(" ", args)); }
        Xunit.Assert.True(p.ExitCode == 0, $"dotnet {string.Join(" ", args)} failed:\n{so.Result}\n{se.Result}");
        return so.Result + se.Result;
    }

    /// <summary>An array a run wrote (path relative to the run folder).</summary>
    public static NdArray Artifact(RunResult r, string relativePath) => Npy.Read(Path.Combine(r.OutDir!, relativePath));

    /// <summary>The manifest record of step <paramref name="id"/>.</summary>
    public static System.Text.Json.Nodes.JsonNode Step(RunResult r, string id) =>
        r.Manifest!["steps"]!.AsArray().First(s => (string?)s!["id"] == id)!;

    /// <summary>A step's status in the run's manifest.</summary>
    public static string StepStatus(RunResult r, string id) => Step(r, id)["status"]!.ToString();

    /// <summary>A step's error in the run's manifest, if any.</summary>
    public static string? StepError(RunResult r, string id) => Step(r, id)["error"]?.ToString();

    /// <summary>A step's warnings in the run's manifest.</summary>
    public static string[] Warnings(RunResult r, string id) =>
        Step(r, id)["warnings"]?.AsArray().Select(w => w!.ToString()).ToArray() ?? [];

    /// <summary>A metric of a step in the run's manifest.</summary>
    public static double Metric(RunResult r, string id, string name) => Step(r, id)["metrics"]![name]!.GetValue<double>();
}

/// <summary>Comparisons with references.</summary>
public static class Numbers
{
    /// <summary>‖a − b‖₂ / ‖b‖₂ (b the reference), after checking the lengths agree.</summary>
    public static double RelL2(float[] a, float[] b)
    {
        Xunit.Assert.Equal(b.Length, a.Length);
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - b[i]) * (double)(a[i] - b[i]); den += b[i] * (double)b[i]; }
        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }
}
