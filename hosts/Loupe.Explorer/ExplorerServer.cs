using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Loupe.Explorer;

/// <summary>How <c>loupe serve</c> starts.</summary>
public sealed record ExplorerOptions
{
    /// <summary>Interface to bind; loopback unless the user says otherwise.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>Port (0: any free one).</summary>
    public int Port { get; init; }
    /// <summary>The secret every request must carry (in the printed URL, then as a header); random by default.</summary>
    public string Token { get; init; } = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
    /// <summary>Largest upload (the data sources' pixel limit applies on top).</summary>
    public int MaxUploadBytes { get; init; } = 16 << 20;
    /// <summary>How many of the pipeline's inputs are offered.</summary>
    public int MaxInputs { get; init; } = 64;
    /// <summary>Explanations kept for repeated requests (least recently used go first).</summary>
    public int CacheEntries { get; init; } = 256;
    /// <summary>Folders whose run folders the Runs tab may open (default: the pipeline's <c>output.dir</c> parent,
    /// e.g. <c>runs/</c>). Nothing outside them is readable.</summary>
    public IReadOnlyList<string>? RunRoots { get; init; }
}

/// <summary>The explorer: a model loaded once (<see cref="LoupeModel.FromPipeline"/>), its inputs, and JSON endpoints that
/// explain them with any registered technique. Every request needs the token; requests from another origin are refused;
/// no path from a request reaches the file system (inputs are addressed by index, uploads are decoded in memory).</summary>
public sealed partial class ExplorerServer : IAsyncDisposable
{
    readonly LoupeModel _model;
    readonly ExplorerOptions _options;
    readonly List<(string Id, NdArray Input, RgbImage Picture)> _inputs;
    readonly List<(string Id, NdArray Input, RgbImage Picture)> _uploads = [];
    readonly ExplanationCache _cache;
    readonly IReadOnlyList<Core.LayerRow> _layers;
    readonly JobTable _jobs = new(64);
    /// <summary>The web app (started by <see cref="StartAsync"/>).</summary>
    public WebApplication App { get; }

    ExplorerServer(LoupeModel model, ExplorerOptions options, IReadOnlyList<string> runRoots)
    {
        _model = model; _options = options;
        _runRoots = [.. runRoots.Select(r => Abstractions.Toolkit.SafeFile.RealPath(Path.GetFullPath(r)))];
        _inputs = [.. model.PipelineInputs(options.MaxInputs)];
        _cache = new ExplanationCache(options.CacheEntries);
        _layers = model.LayerShapes();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxUploadBytes);
        App = builder.Build();
        App.Use(Guard);
        Routes(App);
        JobRoutes(App);
        DatasetRoutes(App);
        RunRoutes(App);
    }

    /// <summary>Loads the pipeline's model and data and builds the app (not started).</summary>
    public static ExplorerServer Create(string pipelineFile, ExplorerOptions? options = null, LoupeSettings? settings = null)
    {
        options ??= new ExplorerOptions();
        var roots = options.RunRoots ?? [DefaultRunRoot(pipelineFile)];
        var model = LoupeModel.FromPipeline(pipelineFile, settings);
        try { return new(model, options, roots); }
        catch { model.Dispose(); throw; }
    }

    /// <summary>Starts listening; returns the URL to open (with the token).</summary>
    public async Task<string> StartAsync(CancellationToken cancellation = default)
    {
        await App.StartAsync(cancellation);
        return $"{App.Urls.First()}/?token={_options.Token}";
    }

    /// <summary>The address the server listens on.</summary>
    public string BaseUrl => App.Urls.First();

    async Task Guard(HttpContext http, RequestDelegate next)
    {
        // Another origin (a web page the user happens to have open) may not drive the explorer.
        // The one exception: a report page runs sandboxed (an opaque origin, "null") and loads its own images (GET /t/...).
        var reportImage = HttpMethods.IsGet(http.Request.Method) && http.Request.Path.StartsWithSegments("/t");
        if (http.Request.Headers.Origin is { Count: > 0 } origin && origin.ToString() != $"{http.Request.Scheme}://{http.Request.Host}"
            && !(reportImage && origin.ToString() == "null"))
        {
            http.Response.StatusCode = StatusCodes.Status403Forbidden;
            return;
        }
        var token = http.Request.Headers["X-Loupe-Token"].ToString();
        if (token.Length == 0) token = http.Request.Query["token"].ToString();
        // Run files (a report and the images it names by relative path) carry the token as the first path segment.
        if (token.Length == 0 && http.Request.Path.StartsWithSegments("/t", out var rest) && rest.Value is { Length: > 1 } r)
            token = r[1..].Split('/')[0];
        if (!CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(token), System.Text.Encoding.UTF8.GetBytes(_options.Token)))
        {
            http.Response.StatusCode = StatusCodes.Status401Unauthorized;
            await http.Response.WriteAsync("missing or wrong token: open the URL 'loupe serve' printed");
            return;
        }
        http.Response.Headers["X-Content-Type-Options"] = "nosniff";
        http.Response.Headers["Referrer-Policy"] = "no-referrer";
        http.Response.Headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'";
        await next(http);
    }

    void Routes(WebApplication app)
    {
        // The page names its script and style with the token too: no request is served without it.
        app.MapGet("/", () => Results.Text(System.Text.Encoding.UTF8.GetString(Asset("index.html")).Replace("__TOKEN__", _options.Token), "text/html; charset=utf-8"));
        app.MapGet("/app.js", () => Results.Bytes(Asset("app.js"), "text/javascript; charset=utf-8"));
        app.MapGet("/tabs.js", () => Results.Bytes(Asset("tabs.js"), "text/javascript; charset=utf-8"));
        app.MapGet("/app.css", () => Results.Bytes(Asset("app.css"), "text/css; charset=utf-8"));

        app.MapGet("/api/info", () => Results.Json(new
        {
            layers = _layers.Select(l => new { name = l.Name, kind = l.Kind, shape = l.OutputShape }),
            labels = _model.Labels,
            input = new { channels = _model.Input.Channels, height = _model.Input.Height, width = _model.Input.Width },
            // Techniques that explain a target for an input (attribution, CAM, perturbation), runnable on this backend.
            techniques = _model.Techniques.Where(t => t.Requirements.UsesTarget && (t.Requirements.Capabilities & ~_model.Model.Capabilities) == 0)
                .Select(t => new { id = t.Id, description = t.Description }),
            inputs = Inputs(),
        }));
        app.MapGet("/api/techniques/{id}", (string id) =>
        {
            var t = _model.Techniques.FirstOrDefault(t => t.Id == id);
            return t is null ? Results.NotFound() : Results.Json(new { id = t.Id, description = t.Description, options = t.Options });
        });
        app.MapGet("/api/inputs/{index:int}.png", (int index) =>
            Picture(index) is { } p ? Results.File(p.ToPng(), "image/png") : Results.NotFound());
        app.MapGet("/api/predict/{index:int}", (int index, int? k) =>
        {
            lock (_uploads)
                if (!Exists(index)) return Results.NotFound();
            try { return Results.Json(Predict(index, Math.Clamp(k ?? 5, 1, 100))); }
            catch (LoupeException e) { return Results.UnprocessableEntity(new { error = e.Message }); }
        });
        app.MapPost("/api/upload", async (HttpRequest request, CancellationToken ct) =>
        {
            using var ms = new MemoryStream();
            await request.Body.CopyToAsync(ms, ct);
            try
            {
                // Decoded, resized and normalised by the data source, with its pixel limits: a bad file fails here.
                var (_, input, picture) = _model.Preprocess([ImageInput.FromBytes(ms.ToArray(), "upload")], ct)[0];
                lock (_uploads)
                {
                    _uploads.Add(($"upload-{_uploads.Count + 1}", input, picture));
                    return Results.Json(new { index = _inputs.Count + _uploads.Count - 1, inputs = Inputs() });
                }
            }
            catch (LoupeException e) { return Results.UnprocessableEntity(new { error = e.Message }); }
        });
        app.MapPost("/api/explain", async (HttpRequest request, CancellationToken ct) =>
        {
            var (call, refused) = await ReadCall(request, ct);
            if (refused is not null) return refused;
            var result = _cache.GetOrAdd(call!.Key, () => Explain(call.Index, call.Technique, call.Options, call.Target, ct));
            return result.Error is null ? Results.Json(result) : Results.UnprocessableEntity(result);
        });
    }

    object[] Inputs()
    {
        lock (_uploads)
            return [.. _inputs.Select((x, i) => (object)new { index = i, id = x.Id }), .. _uploads.Select((u, i) => (object)new { index = _inputs.Count + i, id = u.Id })];
    }

    bool Exists(int index) => index >= 0 && index < _inputs.Count + _uploads.Count;

    RgbImage? Picture(int index)
    {
        lock (_uploads)
            return index < 0 ? null : index < _inputs.Count ? _inputs[index].Picture : index - _inputs.Count < _uploads.Count ? _uploads[index - _inputs.Count].Picture : null;
    }

    NdArray Input(int index)
    {
        lock (_uploads) return index < _inputs.Count ? _inputs[index].Input : _uploads[index - _inputs.Count].Input;
    }

    IReadOnlyList<Prediction> Predict(int index, int k) => _model.Predict(Input(index), k)[0];

    /// <summary>One explanation as the page shows it.</summary>
    public sealed record Shown(string Technique, string? Target, string? Png, float? Min, float? Max, string? Error, double Milliseconds);

    Shown Explain(int index, string technique, JsonObject? options, JsonNode? target, CancellationToken ct, IProgress<ExplainProgress>? progress = null)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            var e = progress is null ? _model.Explain(technique, Input(index), options, target, ct)
                : _model.Explain(technique, Input(index), options, target, progress, ct);
            var id = e.InputIds[0];
            var display = e.Artifacts.FirstOrDefault(a => a.InputId == id && a.Kind == ArtifactKind.Display && a.Name == technique)
                ?? e.Artifacts.FirstOrDefault(a => a.Kind == ArtifactKind.Display);
            var raw = e.Artifacts.FirstOrDefault(a => a.InputId == id && a.Kind == ArtifactKind.Raw && a.Name == technique)
                ?? e.Artifacts.FirstOrDefault(a => a.Kind == ArtifactKind.Raw);
            return new Shown(technique, display?.Target ?? raw?.Target, display is null ? null : Convert.ToBase64String(display.Image!.ToPng()),
                raw?.Array!.Data.Min(), raw?.Array!.Data.Max(), display is null ? $"{technique} produced no picture for this input" : null, sw.Elapsed.TotalMilliseconds);
        }
        catch (Exception ex) when (ex is LoupeException or ArgumentException or KeyNotFoundException)
        {
            // One failing technique shows its error in place; the app goes on.
            return new Shown(technique, null, null, null, null, ex.Message, sw.Elapsed.TotalMilliseconds);
        }
        finally { TrimHeap(); }
    }

    long _lastTrim;

    /// <summary>Hands freed native heap pages back to the OS (at most once a second), as a pipeline run does after it
    /// ends: without it the C heap keeps the peak of every computation and the server's RSS creeps up.</summary>
    internal void TrimHeap()
    {
        var now = Environment.TickCount64;
        if (now - Interlocked.Read(ref _lastTrim) < 1000) return;
        Interlocked.Exchange(ref _lastTrim, now);
        Core.NativeHeap.Trim();
    }

    static byte[] Asset(string name)
    {
        using var s = typeof(ExplorerServer).Assembly.GetManifestResourceStream("explorer/" + name)!;
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray();
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        _jobs.CancelAll();
        await App.DisposeAsync();
        DeleteComparisons();
        _model.Dispose();
    }

    /// <summary>A bounded LRU of explanations: the server's memory stays flat over any number of requests.</summary>
    sealed class ExplanationCache(int capacity)
    {
        readonly LinkedList<(string Key, Shown Value)> _order = [];
        readonly Dictionary<string, LinkedListNode<(string Key, Shown Value)>> _map = [];

        public Shown GetOrAdd(string key, Func<Shown> make)
        {
            lock (_map)
                if (_map.TryGetValue(key, out var hit)) { _order.Remove(hit); _order.AddFirst(hit); return hit.Value.Value; }
            var value = make();
            if (value.Error is not null) return value; // errors are not kept: the next try runs again
            lock (_map)
            {
                if (_map.ContainsKey(key)) return value;
                _map[key] = _order.AddFirst((key, value));
                while (_map.Count > capacity) { _map.Remove(_order.Last!.Value.Key); _order.RemoveLast(); }
            }
            return value;
        }
    }
}
