// Usage: Loupe.Samples.Console [IMAGE] [OUT.png]   (defaults: a shipped Fashion-MNIST sneaker, grad-cam.png)
using Loupe;

var samples = Path.Combine(AppContext.BaseDirectory, "../../../../../../samples"); // the repository's samples/
if (Environment.GetEnvironmentVariable("LOUPE_SAMPLES") is { Length: > 0 } env) samples = env;
var image = args.Length > 0 ? args[0] : Path.Combine(samples, "images/fashion/00009-sneaker.png");
var output = args.Length > 1 ? args[1] : "grad-cam.png";

using var model = LoupeModel.Load("torchvision",
    new { architecture = "fashion-cnn", weights = Path.Combine(samples, "models/fashion-cnn/fashion-cnn.safetensors") },
    new LoupeSettings { Labels = Path.Combine(samples, "models/fashion-cnn/labels.txt") });

foreach (var p in model.Predict(image, k: 5))
    Console.WriteLine($"{p.Label,-12} {p.Probability,7:P1}");

var cam = model.Explain("grad-cam", image, new { layer = "relu3" });   // target: the top-1 class
File.WriteAllBytes(output, cam.Overlay().ToPng());
Console.WriteLine($"grad-cam ({cam.Artifacts.First(a => a.Target is not null).Target}) -> {Path.GetFullPath(output)}");
