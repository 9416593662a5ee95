using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core.Report;

/// <summary>What the report reads of a finished run besides its folder (the typed hand-off from the run stage): the
/// data source and preprocessing its thumbnails are drawn from, and the run's batch size.</summary>
public sealed record ReportData(IDataSource Data, InputSpec Input, int BatchSize);

/// <summary>The runner's one call at the end of a run: with <c>output.report: html</c>, input thumbnails (for the
/// scatter and the grid) and <c>report.html</c>. A report that cannot be written is a warning, never a failed run.</summary>
internal static class RunReport
{
    /// <param name="report">The pipeline's <c>output.report</c> (only <c>html</c> writes one).</param>
    /// <param name="data">The run's data (null: a run without data, no thumbnails).</param>
    public static void AfterRun(string? report, ReportData? data, string outDir, JsonObject manifest, IRunObserver? observer)
    {
        if (report != "html") return;
        var status = manifest["status"]?.ToString();
        try
        {
            // The thumbnails need one more pass over the data; a run stopped with Ctrl+C gets its report without them.
            if (data is not null && status != "cancelled")
            {
                ThumbnailIndex.Write(data, outDir, CancellationToken.None);
                manifest["report"] = new JsonObject { ["path"] = HtmlReport.FileName, ["thumbnails"] = ThumbnailIndex.IndexPath };
            }
            else manifest["report"] = new JsonObject { ["path"] = HtmlReport.FileName };
            Manifest.Write(outDir, manifest);
            HtmlReport.Write(outDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or LoupeException or System.Text.Json.JsonException)
        {
            observer?.Warning($"report not written: {e.Message}");
        }
    }
}
