using System.Text.Json;
using Loupe.Abstractions;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Loupe.Explorer;

public sealed partial class ExplorerServer
{
    /// <summary>A technique call as the page sends it: input index, technique id, options, target.</summary>
    sealed record Call(int Index, string Technique, JsonObject? Options, JsonNode? Target)
    {
        public string Key => $"{Index}\n{Technique}\n{Options?.ToJsonString()}\n{Target?.ToJsonString()}";
    }

    async Task<(Call? Call, IResult? Refused)> ReadCall(HttpRequest request, CancellationToken ct)
    {
        JsonObject body;
        try { body = await JsonSerializer.DeserializeAsync<JsonObject>(request.Body, cancellationToken: ct) ?? []; }
        catch (JsonException e) { return (null, Results.BadRequest(new { error = "request body: " + e.Message })); }
        int index;
        string technique;
        try
        {
            index = body["input"]?.GetValue<int>() ?? -1;
            technique = body["technique"]?.GetValue<string>() ?? "";
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            return (null, Results.BadRequest(new { error = "request body: 'input' must be a number and 'technique' a string" }));
        }
        lock (_uploads)
            if (!Exists(index)) return (null, Results.NotFound(new { error = $"no input {index}" }));
        return (new Call(index, technique, body["options"] as JsonObject, body["target"]), null);
    }

    /// <summary>Background computations with progress and cancel: <c>POST /api/jobs</c> starts an explanation (the
    /// body of <c>/api/explain</c>; a cached one answers done at once), <c>GET /api/jobs/{id}</c> reports it,
    /// <c>DELETE /api/jobs/{id}</c> cancels it.</summary>
    void JobRoutes(WebApplication app)
    {
        app.MapPost("/api/jobs", async (HttpRequest request, CancellationToken ct) =>
        {
            var (call, refused) = await ReadCall(request, ct);
            if (refused is not null) return refused;
            var job = _jobs.Start((progress, token) => _cache.GetOrAdd(call!.Key, () => Explain(call.Index, call.Technique, call.Options, call.Target, token, progress)));
            return Results.Json(job.Snapshot());
        });
        app.MapGet("/api/jobs/{id}", (string id) => _jobs.Find(id) is { } job ? Results.Json(job.Snapshot()) : Results.NotFound());
        app.MapDelete("/api/jobs/{id}", (string id) =>
        {
            if (_jobs.Find(id) is not { } job) return Results.NotFound();
            job.Cancel();
            return Results.Json(job.Snapshot());
        });
    }

    /// <summary>The pipeline's inputs (not uploads) as one N×C×H×W batch: the data the dataset techniques see, rows in
    /// input-index order (row ids 00000, 00001, ...).</summary>
    NdArray DatasetBatch()
    {
        var first = _inputs[0].Input;
        long per = first.Data.Length;
        var data = new float[per * _inputs.Count];
        for (int i = 0; i < _inputs.Count; i++) _inputs[i].Input.Data.CopyTo(data.AsSpan((int)(i * per)));
        return new NdArray(data, [_inputs.Count, .. first.Shape[1..]]);
    }

    /// <summary>Dataset tab: the embedding map (the <c>pca</c> or <c>tsne</c> technique over the pipeline's inputs at a
    /// layer), nearest neighbours of one input (<c>nearest-neighbours</c>) and max-activating patches of a channel
    /// (<c>max-patches</c>), each a job. The techniques are the plugins' own, called through the library.</summary>
    void DatasetRoutes(WebApplication app)
    {
        IResult Start(Func<IProgress<ExplainProgress>, CancellationToken, object> work) =>
            _inputs.Count == 0 ? Results.UnprocessableEntity(new { error = "the pipeline has no data section: no dataset to map" })
                : Results.Json(_jobs.Start((progress, token) =>
                {
                    try { return work(progress, token); }
                    finally { TrimHeap(); }
                }).Snapshot());
        app.MapPost("/api/dataset/map", async (HttpRequest request, CancellationToken ct) =>
        {
            var body = await Body(request, ct);
            var layer = Text(body, "layer");
            var method = Text(body, "method") is "tsne" ? "tsne" : "pca";
            return Start((progress, token) => Map(layer, method, progress, token));
        });
        app.MapPost("/api/dataset/neighbours", async (HttpRequest request, CancellationToken ct) =>
        {
            var body = await Body(request, ct);
            var layer = Text(body, "layer");
            var index = body?["input"] is JsonValue v && v.TryGetValue<int>(out var i) ? i : -1;
            if (index < 0 || index >= _inputs.Count) return Results.NotFound(new { error = $"no dataset input {index}" });
            return Start((progress, token) =>
            {
                var e = _model.Explain("nearest-neighbours", DatasetBatch(), new { layer, k = Math.Min(8, _inputs.Count - 1), queries = new[] { index.ToString("D5") } }, null, progress, token);
                var rows = e.DatasetArray("indices");
                var dist = e.DatasetArray("distances");
                return new { input = index, layer, neighbours = rows.Data.Select((r, k) => new { index = (int)r, distance = dist.Data[k] }).ToArray() };
            });
        });
        app.MapPost("/api/dataset/patches", async (HttpRequest request, CancellationToken ct) =>
        {
            var body = await Body(request, ct);
            var layer = Text(body, "layer");
            var channel = body?["channel"] is JsonValue v && v.TryGetValue<int>(out var c) ? c : -1;
            if (channel < 0) return Results.BadRequest(new { error = "'channel' must be a channel index (0, 1, ...)" });
            return Start((progress, token) =>
            {
                var e = _model.Explain("max-patches", DatasetBatch(), new { layer, channels = new[] { channel }, top = 9 }, null, progress, token);
                var grid = e.Artifacts.FirstOrDefault(a => a.Kind == ArtifactKind.Display && a.Name == $"channel-{channel:D4}")
                    ?? throw new LoupeException($"max-patches produced no grid for channel {channel}");
                var top = e.DatasetArray("top-positions");
                return new
                {
                    layer, channel, png = Convert.ToBase64String(grid.Image!.ToPng()),
                    inputs = Enumerable.Range(0, (int)top.Shape[1]).Select(k => (int)top.Data[k * 3]).ToArray(),
                    values = e.DatasetArray("top-values").Data.Select(v => float.IsNaN(v) ? (float?)null : v).ToArray(),
                };
            });
        });
    }

    /// <summary>2-D coordinates of every dataset input at <paramref name="layer"/>, with its predicted class.</summary>
    object Map(string layer, string method, IProgress<ExplainProgress> progress, CancellationToken token)
    {
        var batch = DatasetBatch();
        object options = method == "tsne"
            ? new { layer, perplexity = Math.Min(30.0, (_inputs.Count - 1) / 3.0), iterations = 500, exaggeration_iterations = 100, map_size = 0 }
            : new { layer, components = 2 };
        var e = _model.Explain(method, batch, options, null, progress, token);
        var xy = e.DatasetArray("coordinates");
        int k = (int)xy.Shape[1];
        var predicted = _model.Predict(batch, 1, token);
        return new
        {
            method, layer, metrics = e.Metrics,
            points = Enumerable.Range(0, _inputs.Count).Select(i => new
            {
                index = i, id = _inputs[i].Id, x = xy.Data[i * k], y = xy.Data[i * k + 1],
                label = predicted[i][0].Index, name = predicted[i][0].Label,
            }).ToArray(),
        };
    }

    static async Task<JsonObject?> Body(HttpRequest request, CancellationToken ct)
    {
        try { return await JsonSerializer.DeserializeAsync<JsonObject>(request.Body, cancellationToken: ct); }
        catch (JsonException) { return null; }
    }

    static string Text(JsonObject? body, string key) => body?[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : "";
}
