using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary>Full-size torchvision vit_b_16 and convnext_tiny (random weights of torch.manual_seed(0), exported by
/// tools/bench/export_models.py into the git-ignored bench-models/, which this class runs when the files are missing)
/// through the differentiable <c>onnx</c> backend at 224², batch 1 and 8, 2 threads: the rows python_bench.py times
/// on the same models in PyTorch.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class OnnxFamilyBenchmarks
{
    /// <summary>torchvision model name.</summary>
    [Params("vit_b_16", "convnext_tiny")]
    public string Model = "vit_b_16";
    /// <summary>Batch size.</summary>
    [Params(1, 8)]
    public int Batch = 1;

    IModel _model = null!;
    Tensor _x = null!;

    static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));

    /// <summary>The exported file of <paramref name="name"/>, exporting it first when missing.</summary>
    public static string Exported(string name)
    {
        var dir = Path.Combine(Root, "bench-models");
        var path = Path.Combine(dir, name + ".onnx");
        if (File.Exists(path)) return path;
        var psi = new ProcessStartInfo("/usr/bin/python3", [Path.Combine(Root, "tools", "bench", "export_models.py"), dir]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0 || !File.Exists(path)) throw new InvalidOperationException($"tools/bench/export_models.py failed ({p.ExitCode}); it needs /usr/bin/python3 with torch and torchvision");
        return path;
    }

    /// <summary>The model through the onnx backend (ImageNet input, 224²).</summary>
    public static IModel Load(string name) => new OnnxAdapter().Load(new OnnxOptions { Path = Exported(name), Preset = "imagenet" }, new ModelLoadContext(".", 0));

    [GlobalSetup]
    public void Setup()
    {
        Bench.Init();
        _model = Load(Model);
        _x = randn(Batch, 3, 224, 224);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _model.Dispose(); }

    [Benchmark(Description = "forward+backward to input"), Floor("")]
    public float ForwardBackward()
    {
        using var scope = NewDisposeScope();
        var x = _x.detach().requires_grad_(true);
        var y = _model.Forward(x);
        return autograd.grad([y.max(1).values.sum()], [x])[0].sum().item<float>();
    }

    [Benchmark(Description = "forward (no grad)"), Floor("")]
    public float Forward()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return _model.Forward(_x).sum().item<float>();
    }

    /// <summary><c>--profile-onnx NAME [BATCH] [CALLS]</c>: per operator type, the share of forward and backward time
    /// (<see cref="OnnxModel.ProfileByOperator"/>), for the fused and the node-by-node plans.</summary>
    public static int Profile(string[] args)
    {
        Bench.Init();
        int batch = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1;
        int calls = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 3;
        using var model = (OnnxModel)Load(args[0]);
        using var x = randn(batch, 3, 224, 224);
        foreach (var fused in new[] { false, true })
        {
            model.ProfileByOperator(x, 1, fused);   // warm-up
            var times = model.ProfileByOperator(x, calls, fused);
            double f = times.Sum(t => t.ForwardMs), b = times.Sum(t => t.BackwardMs);
            Console.WriteLine($"{args[0]} b{batch}, {(fused ? "fused" : "node-by-node")} plan ({(fused ? model.FusedNodeCount : model.RuntimeNodeCount)} nodes), {calls} calls: forward {f / calls:F1} ms, backward {b / calls:F1} ms per call");
            Console.WriteLine("| operator | nodes | forward share | backward share |");
            Console.WriteLine("|---|---:|---:|---:|");
            foreach (var t in times)
                Console.WriteLine($"| {t.Op} | {t.Nodes} | {100 * t.ForwardMs / f:F1} % | {(b > 0 ? 100 * t.BackwardMs / b : 0):F1} % |");
        }
        return 0;
    }
}
