using Loupe.Abstractions;

namespace Loupe.Samples.Web;

/// <summary>The service: two endpoints over one loaded model.</summary>
public static class ExplainService
{
    /// <summary>Largest upload accepted (the image decoder's pixel limit applies on top).</summary>
    public const int MaxUploadBytes = 8 << 20;

    /// <summary>Builds the app; <paramref name="layer"/> is the Grad-CAM layer of <paramref name="model"/>.</summary>
    public static WebApplication Build(string[] args, LoupeModel model, string layer)
    {
        var builder = WebApplication.CreateBuilder(args);
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = MaxUploadBytes);
        var app = builder.Build();

        app.MapPost("/explain", async (HttpRequest request, CancellationToken ct) =>
        {
            if (await ReadImage(request, ct) is not { } input) return Results.BadRequest(new { error = "POST the bytes of a PNG/JPEG/BMP/GIF/WebP/TIFF image" });
            try
            {
                var top = model.Predict(input, k: 5);
                var cam = model.Explain("grad-cam", input, new { layer }, cancellation: ct);
                return Results.Json(new
                {
                    top,
                    target = cam.Artifacts.FirstOrDefault(a => a.Target is not null)?.Target,
                    gradCamPng = Convert.ToBase64String(cam.Overlay().ToPng()),
                });
            }
            catch (LoupeException e) { return Results.BadRequest(new { error = e.Message }); }
        });

        app.MapPost("/explain.png", async (HttpRequest request, CancellationToken ct) =>
        {
            if (await ReadImage(request, ct) is not { } input) return Results.BadRequest(new { error = "POST the bytes of an image" });
            try { return Results.File(model.Explain("grad-cam", input, new { layer }, cancellation: ct).Overlay().ToPng(), "image/png"); }
            catch (LoupeException e) { return Results.BadRequest(new { error = e.Message }); }
        });
        return app;
    }

    static async Task<ImageInput?> ReadImage(HttpRequest request, CancellationToken ct)
    {
        using var ms = new MemoryStream();
        await request.Body.CopyToAsync(ms, ct);
        if (ms.Length == 0) return null;
        try { return ImageInput.FromBytes(ms.ToArray(), "upload"); }
        catch (LoupeException) { return null; }
    }
}
