using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Loupe.Explorer;
using Loupe.Testing;
using PuppeteerSharp;

namespace Loupe.Library.Tests;

/// <summary><c>loupe serve</c>'s server over configs/quickstart.yaml: access rules, results equal to the library's, errors
/// in place, and the page in headless Chromium.</summary>
[Collection("library")]
public class ExplorerTests
{
    static readonly string Quickstart = Path.Combine(RepoPaths.Root, "configs", "quickstart.yaml");
    static readonly LoupeSettings Settings = new() { PluginDirectories = [RepoPaths.BuiltInPlugins] };

    static async Task<(ExplorerServer Server, HttpClient Http, string Url)> Start(ExplorerOptions? options = null)
    {
        var server = ExplorerServer.Create(Quickstart, (options ?? new ExplorerOptions()) with { MaxInputs = 8 }, Settings);
        var url = await server.StartAsync();
        var http = new HttpClient { BaseAddress = new Uri(server.BaseUrl) };
        http.DefaultRequestHeaders.Add("X-Loupe-Token", new Uri(url).Query.Split("token=")[1]);
        return (server, http, url);
    }

    [Fact]
    public async Task RequestsWithoutTheTokenOrFromAnotherOriginAreRefused()
    {
        var (server, http, url) = await Start(new ExplorerOptions { MaxUploadBytes = 1 << 16 });
        await using var _ = server;
        using var anonymous = new HttpClient { BaseAddress = new Uri(server.BaseUrl) };
        foreach (var path in new[] { "/", "/app.js", "/api/info", "/api/inputs/0.png", "/api/predict/0" })
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(path)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/api/info?token=0123")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync(new Uri(url))).StatusCode);

        using var foreign = new HttpRequestMessage(HttpMethod.Get, "/api/info");
        foreign.Headers.Add("Origin", "http://evil.example");
        Assert.Equal(HttpStatusCode.Forbidden, (await http.SendAsync(foreign)).StatusCode);

        // Inputs are addressed by index only: nothing in a request names a file.
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/inputs/99.png")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/inputs/..%2F..%2F..%2Fetc%2Fpasswd")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/techniques/..%2Fx")).StatusCode);
        // Uploads: size-limited, decoded with the data source's limits.
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await http.PostAsync("/api/upload", new ByteArrayContent(new byte[(1 << 16) + 1]))).StatusCode);
        var bad = await http.PostAsync("/api/upload", new ByteArrayContent("GIF89a-not-really"u8.ToArray()));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, bad.StatusCode);
    }

    [Fact]
    public async Task ExplanationsAreTheLibrarysAndAFailingTechniqueShowsItsError()
    {
        var (server, http, _) = await Start();
        await using var _s = server;
        var info = await http.GetFromJsonAsync<JsonElement>("/api/info");
        Assert.Equal(8, info.GetProperty("inputs").GetArrayLength());
        Assert.Contains(info.GetProperty("techniques").EnumerateArray(), t => t.GetProperty("id").GetString() == "grad-cam");

        async Task<(HttpStatusCode, JsonElement)> Explain(object body)
        {
            var r = await http.PostAsJsonAsync("/api/explain", body);
            return (r.StatusCode, await r.Content.ReadFromJsonAsync<JsonElement>());
        }
        var (status, cam) = await Explain(new { input = 2, technique = "grad-cam", options = new { layer = "relu3" }, target = "top-1" });
        Assert.Equal(HttpStatusCode.OK, status);
        using var model = LoupeModel.FromPipeline(Quickstart, Settings);
        var input = model.PipelineInputs(3)[2].Input;
        var direct = model.Explain("grad-cam", input, new { layer = "relu3" }).Overlay().ToPng();
        Assert.Equal(direct, Convert.FromBase64String(cam.GetProperty("png").GetString()!));

        var (failed, error) = await Explain(new { input = 2, technique = "grad-cam", options = new { layer = "nope" } });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, failed);
        Assert.Contains("nope", error.GetProperty("error").GetString());
        var (again, same) = await Explain(new { input = 2, technique = "grad-cam", options = new { layer = "relu3" }, target = "top-1" });
        Assert.Equal(HttpStatusCode.OK, again);
        Assert.Equal(cam.GetProperty("png").GetString(), same.GetProperty("png").GetString());

        var top = await http.GetFromJsonAsync<JsonElement>("/api/predict/2?k=3");
        Assert.Equal(model.Predict(input, 3)[0][0].Label, top[0].GetProperty("label").GetString());
    }

    [Fact]
    public async Task ThePageExplainsSwitchesTargetAndInputAndTakesUploads()
    {
        var (server, _, url) = await Start();
        await using var _s = server;
        await using var browser = await ReportBrowser.LaunchAsync();
        var page = await browser.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = 1280, Height = 800 });
        var errors = new List<string>();
        page.Console += (_, e) => { if (e.Message.Type == ConsoleType.Error) lock (errors) errors.Add(e.Message.Text); };
        page.PageError += (_, e) => { lock (errors) errors.Add(e.Message); };
        await page.GoToAsync(url);

        async Task<string> CamSrc(string? differentFrom = null)
        {
            await page.WaitForFunctionAsync($"() => {{ const i = document.querySelector('#card-grad-cam img.map'); return i && i.src !== {JsonSerializer.Serialize(differentFrom ?? "")}; }}", new WaitForFunctionOptions { Timeout = 60_000 });
            return await page.EvaluateExpressionAsync<string>("document.querySelector('#card-grad-cam img.map').src");
        }
        var first = await CamSrc();
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent === 'done'", new WaitForFunctionOptions { Timeout = 60_000 });
        Assert.Equal(3, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.card img.map').length"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#predictions li').length") == 5);

        await page.SelectAsync("#target", JsonSerializer.Serialize(new { @class = 3 }));
        var otherTarget = await CamSrc(first);
        await page.ClickAsync("#inputs img[data-index='4']");
        await CamSrc(otherTarget);

        var count = await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#inputs img').length");
        var upload = await page.QuerySelectorAsync("#upload");
        await upload.UploadFileAsync(Path.Combine(RepoPaths.Root, "samples", "images", "fashion", "00009-sneaker.png"));
        await page.WaitForFunctionAsync($"() => document.querySelectorAll('#inputs img').length === {count + 1}", new WaitForFunctionOptions { Timeout = 60_000 });
        // The upload is selected: its predictions (the shipped sneaker) replace the previous input's, then its maps.
        await page.WaitForFunctionAsync($"() => document.getElementById('current').textContent === 'input {count}' && document.getElementById('predictions').textContent.startsWith('sneaker')", new WaitForFunctionOptions { Timeout = 60_000 });
        await page.WaitForFunctionAsync("() => document.getElementById('status').textContent === 'done'", new WaitForFunctionOptions { Timeout = 60_000 });
        Assert.Empty(await ReportBrowser.BrokenImagesAsync(page));
        Assert.Empty(errors);
        if (Environment.GetEnvironmentVariable("LOUPE_SCREENSHOTS") is { Length: > 0 } shots)
            await page.ScreenshotAsync(Path.Combine(shots, "explorer.png"));
    }
}
