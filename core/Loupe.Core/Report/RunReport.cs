using System.Text.Json.Nodes;
using Loupe.Abstractions;

namespace Loupe.Core.Report;

/// <summary>The runner's one call at the end of a run: with <c>output.report: html</c>, input thumbnails (for the
/// scatter and the grid) and <c>report.html</c>. A report that cannot be written is a warning, never a failed run.</summary>
internal static class RunReport
{
    public static void AfterRun(PreparedRun run, string outDir, JsonObject manifest, IRunObserver? observer)
    {
        if (run.Spec.Report != "html") return;
        var status = manifest["status"]?.ToString();
        try
        {
            // The thumbnails need one more pass over the data; a run stopped with Ctrl+C gets its report without them.
            if (run.Data is not null && status != "cancelled")
            {
                ThumbnailIndex.Write(run, outDir, CancellationToken.None);
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
