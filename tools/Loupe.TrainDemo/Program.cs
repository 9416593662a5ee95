// Trains the Loupe demo CNN (plugins/Loupe.Models.TorchSharp/FashionCnn.cs) on Fashion-MNIST and exports the
// small sample set shipped under samples/. Usage (from the repository root):
//   dotnet run -c Release --project tools/Loupe.TrainDemo -- train [--data DIR] [--out DIR] [--epochs N] [--seed S]
//   dotnet run -c Release --project tools/Loupe.TrainDemo -- export-samples [--data DIR] [--out DIR] [--count N]
// DIR defaults: --data /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), --out samples.
using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using Loupe.Abstractions;
using Loupe.Data;
using Loupe.Models.TorchSharp;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

string Arg(string name, string def) { var i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : def; }
var verb = args.FirstOrDefault() ?? "train";
var dataDir = Arg("--data", "/usr/share/datasets/fashion-mnist");
var outDir = Arg("--out", "samples");
string[] labels = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];

(byte[] Pixels, byte[] Labels, int N) Load(string split)
{
    var img = Path.Combine(dataDir, $"{split}-images-idx3-ubyte.gz");
    var lab = Path.Combine(dataDir, $"{split}-labels-idx1-ubyte.gz");
    if (!File.Exists(img)) throw new FileNotFoundException($"{img} not found: install the Debian package dataset-fashion-mnist (scripts/setup.sh --train)");
    using var s = IdxAdapter.OpenStream(img);
    var h = IdxAdapter.ReadHeader(s, img);
    var px = new byte[h.Dims[0] * 28 * 28];
    s.ReadExactly(px);
    using var l = IdxAdapter.OpenStream(lab);
    IdxAdapter.ReadHeader(l, lab);
    var lb = new byte[h.Dims[0]];
    l.ReadExactly(lb);
    return (px, lb, h.Dims[0]);
}

Tensor Normalize(byte[] px, int start, int count)
{
    var spec = TorchVisionAdapter.FashionMnist;
    var t = tensor(px.AsSpan(start * 784, count * 784).ToArray(), [count, 1, 28, 28]).to(ScalarType.Float32) / 255f;
    return (t - spec.Mean[0]) / spec.Std[0];
}

if (verb == "train")
{
    int epochs = int.Parse(Arg("--epochs", "8")), seed = int.Parse(Arg("--seed", "7")), batch = 128;
    torch.set_num_threads(Environment.ProcessorCount);
    torch.manual_seed(seed);
    var train = Load("train");
    var test = Load("t10k");
    using var model = new FashionCnn();
    var optimizer = optim.Adam(model.parameters(), lr: 2e-3);
    var schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs);
    var rng = new Random(seed);
    var sw = Stopwatch.StartNew();
    double accuracy = 0;
    for (int epoch = 0; epoch < epochs; epoch++)
    {
        model.train();
        var order = Enumerable.Range(0, train.N).OrderBy(_ => rng.Next()).ToArray();
        double lossSum = 0; int batches = 0;
        for (int b = 0; b + batch <= train.N; b += batch)
        {
            using var scope = NewDisposeScope();
            var idx = order.AsSpan(b, batch).ToArray();
            var px = new byte[batch * 784];
            for (int i = 0; i < batch; i++) Array.Copy(train.Pixels, idx[i] * 784, px, i * 784, 784);
            var x = Normalize(px, 0, batch);
            if (rng.Next(2) == 0) x = x.flip(3); // horizontal flip augmentation (half the batches)
            var y = tensor(idx.Select(i => (long)train.Labels[i]).ToArray());
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(model.call(x), y);
            loss.Backward();
            optimizer.step();
            lossSum += loss.item<float>(); batches++;
        }
        schedule.step();
        accuracy = Evaluate(model, test);
        Console.WriteLine($"epoch {epoch + 1}/{epochs}: loss {lossSum / batches:F4}, test accuracy {accuracy:P2}, {sw.Elapsed.TotalSeconds:F0}s");
    }
    var dir = Path.Combine(outDir, "models", "fashion-cnn");
    Directory.CreateDirectory(dir);
    model.eval();
    model.save_safetensors(Path.Combine(dir, "fashion-cnn.safetensors"));
    File.WriteAllLines(Path.Combine(dir, "labels.txt"), labels);
    File.WriteAllText(Path.Combine(dir, "training.json"), JsonSerializer.Serialize(new
    {
        architecture = "fashion-cnn", dataset = "Fashion-MNIST (Debian dataset-fashion-mnist)", epochs, seed, batch,
        optimizer = "Adam lr 2e-3, cosine annealing", augmentation = "horizontal flip of half the batches",
        testAccuracy = Math.Round(accuracy, 4), trainSeconds = Math.Round(sw.Elapsed.TotalSeconds), threads = torch.get_num_threads(),
    }, new JsonSerializerOptions { WriteIndented = true }));
    Console.WriteLine($"saved {dir} (test accuracy {accuracy:P2})");
    return accuracy >= 0.90 ? 0 : 1;
}
if (verb == "export-samples")
{
    int count = int.Parse(Arg("--count", "500"));
    var test = Load("t10k");
    var dir = Path.Combine(outDir, "data", "fashion-mnist");
    Directory.CreateDirectory(dir);
    void WriteIdx(string path, byte[] header, byte[] body)
    {
        using var fs = File.Create(path);
        using var gz = new GZipStream(fs, CompressionLevel.SmallestSize);
        gz.Write(header); gz.Write(body);
    }
    static byte[] BE(int v) => [(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v];
    WriteIdx(Path.Combine(dir, $"t10k-first{count}-images-idx3-ubyte.gz"), [0, 0, 8, 3, .. BE(count), .. BE(28), .. BE(28)], test.Pixels.AsSpan(0, count * 784).ToArray());
    WriteIdx(Path.Combine(dir, $"t10k-first{count}-labels-idx1-ubyte.gz"), [0, 0, 8, 1, .. BE(count)], test.Labels.AsSpan(0, count).ToArray());
    // Two PNGs per class (the first test images of each class) for the image-folder examples.
    var png = Path.Combine(outDir, "images", "fashion");
    Directory.CreateDirectory(png);
    for (int c = 0; c < 10; c++)
        foreach (var i in Enumerable.Range(0, test.N).Where(i => test.Labels[i] == c).Take(2))
        {
            using var img = Image.LoadPixelData<L8>(test.Pixels.AsSpan(i * 784, 784).ToArray(), 28, 28);
            img.SaveAsPng(Path.Combine(png, $"{i:D5}-{labels[c]}.png"));
        }
    Console.WriteLine($"exported {count} test images to {dir} and 20 PNGs to {png}");
    return 0;
}
Console.Error.WriteLine("usage: train | export-samples");
return 2;

static double Evaluate(FashionCnn model, (byte[] Pixels, byte[] Labels, int N) test)
{
    model.eval();
    using var _ = no_grad();
    long correct = 0;
    for (int b = 0; b < test.N; b += 1000)
    {
        using var scope = NewDisposeScope();
        int n = Math.Min(1000, test.N - b);
        var spec = TorchVisionAdapter.FashionMnist;
        var x = (tensor(test.Pixels.AsSpan(b * 784, n * 784).ToArray(), [n, 1, 28, 28]).to(ScalarType.Float32) / 255f - spec.Mean[0]) / spec.Std[0];
        var pred = model.call(x).argmax(1);
        var y = tensor(test.Labels.AsSpan(b, n).ToArray().Select(v => (long)v).ToArray());
        correct += pred.eq(y).sum().item<long>();
    }
    return correct / (double)test.N;
}
