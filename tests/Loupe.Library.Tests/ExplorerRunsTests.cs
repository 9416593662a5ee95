using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Loupe.Explorer;
using Loupe.Testing;

namespace Loupe.Library.Tests;

/// <summary>Two small runs under a run root (one with report.html, one without): the Runs routes list them, serve their
/// reports and files, compare them, and refuse every path that leaves a run folder.</summary>
[Collection("library")]
public sealed class ExplorerRunsTests : IDisposable
{
    internal static readonly string Configs = Path.Combine(RepoPaths.Root, "configs");
    readonly string _work = Directory.CreateTempSubdirectory("loupe-explorer-runs-").FullName;
    string Root => Path.Combine(_work, "runs");

    internal static string Yaml(string report) => $"""
        version: 1
        name: tiny
        seed: 0
        model:
          uses: torchvision
          with: {"{"} architecture: fashion-cnn, weights: ../samples/models/fashion-cnn/fashion-cnn.safetensors {"}"}
          labels: ../samples/models/fashion-cnn/labels.txt
        data:
          uses: idx
          with: {"{"} images: ../samples/data/fashion-mnist/t10k-first500-images-idx3-ubyte.gz, labels: ../samples/data/fashion-mnist/t10k-first500-labels-idx1-ubyte.gz, limit: 3 {"}"}
        steps:
          - id: grad-cam
            uses: grad-cam
            with: {"{"} layer: relu3 {"}"}
        output: {"{"} report: {report} {"}"}
        """;

    /// <summary>Runs the tiny pipeline into <paramref name="dir"/>.</summary>
    internal static void MakeRun(string dir, string report)
    {
        var r = Pipelines.RunYaml(Yaml(report), Configs, new PipelineOptions { OutDir = dir, PluginDirectories = [RepoPaths.BuiltInPlugins] });
        Assert.True(r.ExitCode == 0, string.Join("; ", r.Errors));
    }

    public void Dispose()
    {
        try { Directory.Delete(_work, true); } catch (IOException) { }
    }

    /// <summary>The status line of a request sent byte for byte (HttpClient would normalise the dots and escapes).</summary>
    static async Task<int> RawStatus(Uri server, string target, string? origin = null)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(server.Host, server.Port);
        var stream = tcp.GetStream();
        var head = $"GET {target} HTTP/1.1\r\nHost: {server.Authority}\r\n{(origin is null ? "" : $"Origin: {origin}\r\n")}Connection: close\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        var line = await new StreamReader(stream).ReadLineAsync();
        return int.Parse(line!.Split(' ')[1]);
    }

    [Fact]
    public async Task RunsAreListedOpenedComparedAndNothingOutsideThemIsServed()
    {
        MakeRun(Path.Combine(Root, "run-a"), "none");
        MakeRun(Path.Combine(Root, "run-b"), "html");
        File.WriteAllText(Path.Combine(_work, "secret.txt"), "not for the browser");
        Directory.CreateDirectory(Path.Combine(Root, "not-a-run"));
        File.WriteAllText(Path.Combine(Root, "not-a-run", "notes.txt"), "no manifest here");
        File.CreateSymbolicLink(Path.Combine(Root, "run-a", "leak.txt"), Path.Combine(_work, "secret.txt"));
        Directory.CreateSymbolicLink(Path.Combine(Root, "run-link"), Path.Combine(Root, "run-a"));

        var (server, http, url) = await ExplorerJobsTests.Start(new ExplorerOptions { RunRoots = [Root] });
        await using var _s = server;
        var token = new Uri(url).Query.Split("token=")[1];
        var runs = await http.GetFromJsonAsync<JsonElement>("/api/runs");
        Assert.Equal(["run-a", "run-b"], runs.GetProperty("runs").EnumerateArray().Select(r => r.GetProperty("name").GetString()));

        // Reports: run-a wrote none (built on the fly), run-b's own file; both name their images by relative path.
        foreach (var run in new[] { "run-a", "run-b" })
        {
            var report = await http.GetAsync($"/t/{token}/runs/0/{run}/report.html");
            Assert.Equal(HttpStatusCode.OK, report.StatusCode);
            Assert.Contains("sandbox", report.Headers.GetValues("Content-Security-Policy").Single());
            var html = await report.Content.ReadAsStringAsync();
            Assert.Contains("grad-cam", html);
            var image = System.Text.RegularExpressions.Regex.Match(html, "src=\"(grad-cam/[^\"]+\\.png)\"").Groups[1].Value;
            Assert.NotEqual("", image);
            var png = await http.GetAsync($"/t/{token}/runs/0/{run}/{image}");
            Assert.Equal(HttpStatusCode.OK, png.StatusCode);
            Assert.Equal(await File.ReadAllBytesAsync(Path.Combine(Root, run, image)), await png.Content.ReadAsByteArrayAsync());
        }
        Assert.False(File.Exists(Path.Combine(Root, "run-a", "report.html")));   // the run folder is only read

        var compare = await http.PostAsJsonAsync("/api/runs/compare", new { root = 0, a = "run-a", b = "run-b" });
        Assert.Equal(HttpStatusCode.OK, compare.StatusCode);
        var compareUrl = (await compare.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("url").GetString()!;
        var page = await http.GetStringAsync(compareUrl);
        Assert.Contains("run-a", page);
        var delta = System.Text.RegularExpressions.Regex.Match(page, "src=\"([^\"]*delta[^\"]*\\.png)\"").Groups[1].Value;
        Assert.NotEqual("", delta);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(new Uri(server.BaseUrl + compareUrl), delta))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.PostAsJsonAsync("/api/runs/compare", new { root = 0, a = "run-a", b = "../secret.txt" })).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.PostAsJsonAsync("/api/runs/compare", new { root = 0, a = "run-a", b = "run-link" })).StatusCode);

        // Refused: everything that is not a file inside a listed run folder, however it is spelled.
        var baseUri = new Uri(server.BaseUrl);
        Assert.Equal(200, await RawStatus(baseUri, $"/t/{token}/runs/0/run-a/manifest.json"));
        foreach (var target in new[]
        {
            $"/t/{token}/runs/0/run-a/../../secret.txt", $"/t/{token}/runs/0/run-a/../../../secret.txt",
            $"/t/{token}/runs/0/run-a/%2e%2e/%2e%2e/secret.txt", $"/t/{token}/runs/0/run-a/..%2f..%2fsecret.txt",
            $"/t/{token}/runs/0/run-a/%2E%2E%2F%2E%2E%2Fsecret.txt", $"/t/{token}/runs/0/run-a/%252e%252e/%252e%252e/secret.txt",
            $"/t/{token}/runs/0/run-a/..%5c..%5csecret.txt", $"/t/{token}/runs/0/run-a/leak.txt", $"/t/{token}/runs/0/run-link/manifest.json",
            $"/t/{token}/runs/0/not-a-run/notes.txt", $"/t/{token}/runs/0//{_work.TrimStart('/')}/secret.txt", $"/t/{token}/runs/1/run-a/manifest.json",
            $"/t/{token}/runs/0/run-a", $"/t/{token}/runs/0/.loupe-explorer-compare/x/compare.html", $"/t/{token}/runs/-1/run-a/manifest.json",
        })
        {
            var status = await RawStatus(baseUri, target);
            Assert.True(status is 400 or 404, $"{target}: {status}");
        }
        Assert.Equal(401, await RawStatus(baseUri, "/t/0123456789abcdef0123456789abcdef/runs/0/run-a/manifest.json"));
        Assert.Equal(401, await RawStatus(baseUri, "/t/runs/0/run-a/manifest.json"));
        Assert.Equal(401, await RawStatus(baseUri, "/api/runs"));
        Assert.Equal(403, await RawStatus(baseUri, $"/t/{token}/runs/0/run-a/manifest.json", "http://evil.example"));
        // A sandboxed report (origin "null") may load its run's files, never drive the API.
        Assert.Equal(200, await RawStatus(baseUri, $"/t/{token}/runs/0/run-a/manifest.json", "null"));
        Assert.Equal(403, await RawStatus(baseUri, $"/api/runs?token={token}", "null"));
    }

    [Fact]
    public void TheDefaultRunRootIsTheOutputFoldersParent()
    {
        var cwd = Environment.CurrentDirectory;
        Assert.Equal(Path.Combine(cwd, "runs"), ExplorerServer.DefaultRunRoot(Path.Combine(Configs, "quickstart.yaml")));
        var fixedDir = Path.Combine(_work, "fixed.yaml");
        File.WriteAllText(fixedDir, Yaml("none").Replace("output: { report: none }", $"output: {{ dir: {Path.Combine(_work, "out", "one")} }}"));
        Assert.Equal(Path.Combine(_work, "out"), ExplorerServer.DefaultRunRoot(fixedDir));
    }
}
