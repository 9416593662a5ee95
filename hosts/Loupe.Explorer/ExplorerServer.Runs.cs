using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Core.Report;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Loupe.Explorer;

public sealed partial class ExplorerServer
{
    /// <summary>Comparisons are written here, inside the runs' root, so compare.html reaches both runs' images by the
    /// relative paths <see cref="RunComparison"/> writes (deleted when the server stops).</summary>
    const string CompareFolder = ".loupe-explorer-compare";
    readonly string[] _runRoots;
    readonly Dictionary<string, string> _comparisons = [];

    /// <summary>Where a pipeline's runs go: its <c>output.dir</c> up to the first templated segment
    /// (<c>runs/{name}-{timestamp}</c> → <c>runs</c>), resolved as <c>loupe run</c> resolves it (against the current folder).</summary>
    public static string DefaultRunRoot(string pipelineFile)
    {
        var spec = PipelineParser.Parse(pipelineFile);
        var parts = spec.OutputDir.Split('/');
        var fixedParts = parts.TakeWhile(p => !p.Contains('{')).ToArray();
        var root = fixedParts.Length == parts.Length ? Path.GetDirectoryName(Path.GetFullPath(spec.OutputDir)) ?? "/" : string.Join('/', fixedParts);
        return Path.GetFullPath(root.Length == 0 ? "." : root);
    }

    /// <summary>The Runs tab. <c>GET /api/runs</c> lists the run folders (folders with a manifest.json) directly under
    /// the allowed roots; <c>/t/{token}/runs/{root}/{run}/{path}</c> serves a file of one of them (<c>report.html</c> is
    /// built on the fly when the run wrote none); <c>POST /api/runs/compare</c> compares two runs of one root. Names in a
    /// request are only ever matched against the listing; a file path is resolved with every link followed and refused
    /// unless it stays inside the run folder.</summary>
    void RunRoutes(WebApplication app)
    {
        app.MapGet("/api/runs", () => Results.Json(new
        {
            roots = _runRoots,
            runs = _runRoots.SelectMany((root, r) => RunNames(r).Select(name => Describe(r, name))).ToArray(),
        }));
        app.MapGet("/t/{token}/runs/{root:int}/{**path}", (int root, string? path, HttpContext http) => RunFile(root, path ?? "", http));
        app.MapPost("/api/runs/compare", async (HttpRequest request, CancellationToken ct) =>
        {
            var body = await Body(request, ct);
            var root = body?["root"] is JsonValue rv && rv.TryGetValue<int>(out var ri) ? ri : -1;
            var a = Text(body, "a");
            var b = Text(body, "b");
            if (root < 0 || root >= _runRoots.Length) return Results.NotFound(new { error = $"no run root {root}" });
            var names = RunNames(root);
            if (!names.Contains(a) || !names.Contains(b)) return Results.NotFound(new { error = "compare two run folders from the list" });
            string folder;
            lock (_comparisons)
            {
                if (!_comparisons.TryGetValue($"{root}\n{a}\n{b}", out folder!))
                {
                    folder = $"{Slug(a)}--{Slug(b)}-{Convert.ToHexString(RandomNumberGenerator.GetBytes(4)).ToLowerInvariant()}";
                    try { RunComparison.Write(Path.Combine(_runRoots[root], a), Path.Combine(_runRoots[root], b), Path.Combine(_runRoots[root], CompareFolder, folder)); }
                    catch (LoupeException e) { return Results.UnprocessableEntity(new { error = e.Message }); }
                    catch (IOException e) { return Results.UnprocessableEntity(new { error = $"cannot write the comparison: {e.Message}" }); }
                    _comparisons[$"{root}\n{a}\n{b}"] = folder;
                }
            }
            return Results.Json(new { url = $"/t/{_options.Token}/runs/{root}/{CompareFolder}/{folder}/compare.html" });
        });
    }

    static string Slug(string s) => new(s.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' ? c : '_').Take(40).ToArray());

    /// <summary>Run folders directly under root <paramref name="root"/> (real folders, not links, with a manifest.json).</summary>
    List<string> RunNames(int root)
    {
        var dir = _runRoots[root];
        if (!Directory.Exists(dir)) return [];
        return [.. Directory.EnumerateDirectories(dir).Where(d => new DirectoryInfo(d).LinkTarget is null && File.Exists(Path.Combine(d, "manifest.json")))
            .Select(d => Path.GetFileName(d)!).Where(n => !n.StartsWith('.')).Order(StringComparer.Ordinal)];
    }

    object Describe(int root, string name)
    {
        try
        {
            var run = RunFolder.Open(Path.Combine(_runRoots[root], name));
            return new
            {
                root, name, pipeline = run.Name, status = run.Status, steps = run.Steps.Select(s => s["id"]?.ToString()).ToArray(),
                url = $"/t/{_options.Token}/runs/{root}/{Uri.EscapeDataString(name)}/{HtmlReport.FileName}",
            };
        }
        catch (LoupeException e) { return new { root, name, error = e.Message }; }
    }

    IResult RunFile(int root, string path, HttpContext http)
    {
        if (root < 0 || root >= _runRoots.Length) return Results.NotFound();
        var parts = path.Split('/');
        // Kestrel decodes %2E but keeps %2F: a '%', a backslash, an empty, '.' or '..' segment never names a file here.
        if (path.Length == 0 || parts.Any(p => p is "" or "." or ".." || p.Contains('%') || p.Contains('\\') || p.Contains('\0') || p.Any(SafeFile.Unsafe)))
            return Results.NotFound();
        var comparison = parts[0] == CompareFolder;
        if (comparison)
        {
            lock (_comparisons)
                if (parts.Length < 3 || !_comparisons.ContainsValue(parts[1])) return Results.NotFound();
        }
        else if (!RunNames(root).Contains(parts[0])) return Results.NotFound();
        var folder = comparison ? Path.Combine(_runRoots[root], CompareFolder, parts[1]) : Path.Combine(_runRoots[root], parts[0]);
        var relative = string.Join('/', parts.Skip(comparison ? 2 : 1));
        string real;
        try { real = SafeFile.Inside(folder, relative, "run file"); }
        catch (LoupeException) { return Results.NotFound(); }
        // The report and comparison pages run their own inline script in a sandbox (no access to this app's origin).
        var host = $"{http.Request.Scheme}://{http.Request.Host}";
        http.Response.Headers.ContentSecurityPolicy = $"sandbox allow-scripts; default-src 'none'; img-src {host} data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'";
        if (!comparison && relative == HtmlReport.FileName && !File.Exists(real))
        {
            try { return Results.Text(HtmlReport.Build(RunFolder.Open(folder)), "text/html; charset=utf-8", Encoding.UTF8); }
            catch (LoupeException e) { return Results.UnprocessableEntity(new { error = e.Message }); }
        }
        if (!SafeFile.IsRegular(real)) return Results.NotFound();
        var type = Path.GetExtension(real).ToLowerInvariant() switch
        {
            ".html" => "text/html; charset=utf-8",
            ".png" => "image/png",
            ".json" => "application/json",
            ".txt" or ".md" or ".csv" or ".yaml" => "text/plain; charset=utf-8",
            _ => "application/octet-stream",
        };
        return Results.File(real, type);
    }

    void DeleteComparisons()
    {
        lock (_comparisons)
            foreach (var (key, folder) in _comparisons)
            {
                var root = _runRoots[int.Parse(key.Split('\n')[0], System.Globalization.CultureInfo.InvariantCulture)];
                try
                {
                    Directory.Delete(Path.Combine(root, CompareFolder, folder), recursive: true);
                    if (!Directory.EnumerateFileSystemEntries(Path.Combine(root, CompareFolder)).Any()) Directory.Delete(Path.Combine(root, CompareFolder));
                }
                catch (IOException) { /* best effort */ }
                catch (UnauthorizedAccessException) { }
            }
    }
}
