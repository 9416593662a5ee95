using Loupe;
using Loupe.Samples.Web;

// Usage: Loupe.Samples.Web [--urls http://127.0.0.1:5080]; then
//   curl --data-binary @image.png http://127.0.0.1:5080/explain          -> {"top":[...], "target":..., "gradCamPng":"<base64>"}
//   curl --data-binary @image.png http://127.0.0.1:5080/explain.png -o cam.png
var samples = Environment.GetEnvironmentVariable("LOUPE_SAMPLES") is { Length: > 0 } env ? env
    : Path.Combine(AppContext.BaseDirectory, "../../../../../../samples");
using var model = LoupeModel.Load("torchvision",
    new { architecture = "fashion-cnn", weights = Path.Combine(samples, "models/fashion-cnn/fashion-cnn.safetensors") },
    new LoupeSettings { Labels = Path.Combine(samples, "models/fashion-cnn/labels.txt") });
var app = ExplainService.Build(args, model, layer: "relu3");
app.Run();
