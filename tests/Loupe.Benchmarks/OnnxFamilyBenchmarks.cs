using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Benchmarks;

/// <summary>Full-size torchvision vit_b_16 and convnext_tiny (random weights of torch.manual_seed(0), exported by
/// tools/bench/export_models.py into the git-ignored bench-models/, which this class runs when the files are missing)
/// through the differentiable <c>onnx</c> backend at 224², batch 1 and 8, 2 threads: the rows python_bench.py times
/// on the same models in PyTorch.</summary>
[MemoryDiagnoser(false)]
[MedianColumn]
public class OnnxFamilyBenchmarks : FamilyBenchmarks
{
    /// <summary>torchvision model name.</summary>
    [Params("vit_b_16", "convnext_tiny")]
    public string Model = "vit_b_16";

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

    /// <inheritdoc/>
    protected override IModel LoadModel() => Load(Model);

    /// <summary><c>--cpu-onnx NAME [BATCH] [ROUNDS]</c>: the two rows at one intra-op thread, timed by the calling
    /// thread's CPU time (minimum over the rounds), which a loaded machine barely disturbs; tools/bench/cpu_time.py
    /// times PyTorch's rows the same way.</summary>
    public static int CpuTime(string[] args)
    {
        var b = new OnnxFamilyBenchmarks { Model = args[0], Batch = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1 };
        int rounds = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 5;
        b.Setup();
        TorchSharp.torch.set_num_threads(1);   // after Setup (Bench.Init sets 2)
        try
        {
            foreach (var (name, row) in new (string, Func<float>)[] { ("forward (no grad)", b.Forward), ("forward+backward to input", b.ForwardBackward) })
            {
                row();
                double best = double.MaxValue;
                for (int r = 0; r < rounds; r++)
                {
                    double start = GemmParity.ThreadCpuMs();
                    row();
                    best = Math.Min(best, GemmParity.ThreadCpuMs() - start);
                }
                Console.WriteLine($"{args[0]} b{b.Batch} | {name} | {best:F1} ms thread CPU (1 thread, min of {rounds})");
            }
        }
        finally { b.Cleanup(); }
        return 0;
    }

    /// <summary><c>--forward-onnx NAME [BATCH] [CALLS]</c>: forward passes without gradients (what perturbation methods
    /// and metrics run) of <c>bench-models/NAME.onnx</c> on random 224² inputs, the fused plan; median and minimum of
    /// CALLS calls (default 5) after one warm-up; with LOUPE_BENCH_ALL set, every call's time too (this VM's timings come in
    /// runs of slow calls: a median alone hides them).</summary>
    public static int Forward(string[] args)
    {
        Bench.Init();
        int batch = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 8;
        int calls = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 5;
        using var model = Load(args[0]);
        using var x = randn(batch, 3, 224, 224);
        var times = new List<double>();
        for (int r = 0; r <= calls; r++)
        {
            using var scope = NewDisposeScope();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using (no_grad()) model.Forward(x);
            if (r > 0) times.Add(sw.Elapsed.TotalMilliseconds);
        }
        if (Environment.GetEnvironmentVariable("LOUPE_BENCH_ALL") is not null) Console.WriteLine(string.Join(" ", times.Select(t => t.ToString("F0"))));
        Console.WriteLine($"{args[0]} b{batch}, forward without gradients: median {times.Order().ElementAt(times.Count / 2):F1} ms, min {times.Min():F1} ms; at most {OnnxModel.HeldPeak} computed values held at once");
        return 0;
    }

    /// <summary><c>--profile-onnx NAME [BATCH] [CALLS] [cpu]</c>: per operator type, the share of forward and backward time
    /// (<see cref="OnnxModel.ProfileByOperator"/>), for the fused and the node-by-node plans.</summary>
    public static int Profile(string[] args)
    {
        Bench.Init();
        int batch = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 1;
        int calls = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 3;
        // A fourth argument "cpu": one intra-op thread, each node timed by the calling thread's CPU time.
        bool cpu = args.Length > 3 && args[3] == "cpu";
        // A fifth argument "shapes": one row per operator and input shapes/strides.
        bool byShape = args.Length > 4 && args[4] == "shapes";
        if (cpu) TorchSharp.torch.set_num_threads(1);
        Func<double>? clock = cpu ? GemmParity.ThreadCpuMs : null;
        using var model = (OnnxModel)Load(args[0]);
        using var x = randn(batch, 3, 224, 224);
        foreach (var fused in new[] { false, true })
        {
            model.ProfileByOperator(x, 1, fused, clock, byShape);   // warm-up
            var times = model.ProfileByOperator(x, calls, fused, clock, byShape);
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
