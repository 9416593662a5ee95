using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using BenchmarkDotNet.Attributes;

namespace Loupe.Benchmarks;

/// <summary><c>--serve</c>: the benchmark rows as a line protocol on stdin/stdout, so that a driver
/// (<c>tools/bench/python_bench.py --paired</c>) can alternate single calls of a Loupe row and its Python counterpart
/// seconds apart — on a machine whose speed drifts by ±20–40 % over minutes, the only comparison that resolves ratios
/// near 1.</summary>
/// <remarks>Protocol: the server first writes one line <c>ROWS [{"name":..,"floor":..,"python":..}, ...]</c>; then, for each request
/// line <c>NAME\tCOUNT</c>, it runs the row COUNT times and answers one line with a JSON array of milliseconds per call
/// (or <c>ERROR message</c>). An empty line or end of input ends it. Each benchmark class is set up
/// ([GlobalSetup]) on its row's first request and kept until the end.</remarks>
public static class Serve
{
    /// <summary>Benchmark classes served, with the parameter sets and the row prefix (model, batch) of each: the same
    /// names as tools/bench/combine.py gives BenchmarkDotNet's results and python_bench.py its rows.</summary>
    static readonly (Type Type, string Prefix, (string Field, object Value)[]? Param)[] Classes =
    [
        (typeof(Resnet18Benchmarks), "resnet18 b1", [("Batch", 1)]),
        (typeof(Resnet18Benchmarks), "resnet18 b8", [("Batch", 8)]),
        (typeof(PathBenchmarks), "resnet18 b1", null),
        (typeof(AttributionFamilyBenchmarks), "resnet18 b8", null),
        (typeof(PerturbationCamBenchmarks), "fashion-cnn b8", null),
        (typeof(QualityMetricBenchmarks), "fashion-cnn b8", null),
        (typeof(LargeRoadBenchmarks), "resnet18 b8", null),
        (typeof(SynthesisBenchmarks), "fashion-cnn b10", null),
        (typeof(MaxPatchesBenchmarks), "fashion-cnn 10k", null),
        (typeof(OrtPerturbationCamBenchmarks), "fashion-cnn b8, onnx-runtime", null),
        (typeof(OrtMaxPatchesBenchmarks), "fashion-cnn 10k, onnx-runtime", null),
        (typeof(OnnxFamilyBenchmarks), "vit_b_16 b1, onnx", [("Model", "vit_b_16"), ("Batch", 1)]),
        (typeof(OnnxFamilyBenchmarks), "vit_b_16 b8, onnx", [("Model", "vit_b_16"), ("Batch", 8)]),
        (typeof(OnnxFamilyBenchmarks), "convnext_tiny b1, onnx", [("Model", "convnext_tiny"), ("Batch", 1)]),
        (typeof(OnnxFamilyBenchmarks), "convnext_tiny b8, onnx", [("Model", "convnext_tiny"), ("Batch", 8)]),
        (typeof(TorchVisionFamilyBenchmarks), "vit_b_16 b1, torchvision", [("Model", "vit_b_16"), ("Batch", 1)]),
        (typeof(TorchVisionFamilyBenchmarks), "vit_b_16 b8, torchvision", [("Model", "vit_b_16"), ("Batch", 8)]),
        (typeof(TorchVisionFamilyBenchmarks), "swin_t b1, torchvision", [("Model", "swin_t"), ("Batch", 1)]),
        (typeof(TorchVisionFamilyBenchmarks), "swin_t b8, torchvision", [("Model", "swin_t"), ("Batch", 8)]),
        (typeof(TorchVisionFamilyBenchmarks), "regnet_y_400mf b1, torchvision", [("Model", "regnet_y_400mf"), ("Batch", 1)]),
        (typeof(TorchVisionFamilyBenchmarks), "regnet_y_400mf b8, torchvision", [("Model", "regnet_y_400mf"), ("Batch", 8)]),
    ];

    /// <summary>Loupe descriptions whose Python row has another name.</summary>
    static readonly Dictionary<string, string> Alias = new() { ["20 steps, pixels, no transforms"] = "activation-max, 20 steps, pixels" };

    /// <param name="Python">The Python row it is compared with: the same name without the backend after the comma
    /// (<c>fashion-cnn b8, onnx-runtime | score-cam (relu3)</c> → <c>fashion-cnn b8 | score-cam (relu3)</c>).</param>
    sealed record Row(string Name, string? Floor, int Class, MethodInfo Method, string Python);

    /// <summary>Runs the server until an empty line or the end of input.</summary>
    public static int Run(TextReader input, TextWriter output)
    {
        var rows = new List<Row>();
        for (int c = 0; c < Classes.Length; c++)
        {
            var methods = Classes[c].Type.GetMethods().Select(m => (m, a: m.GetCustomAttribute<BenchmarkAttribute>())).Where(t => t.a is not null).ToList();
            string Name(BenchmarkAttribute a, MethodInfo m) { var d = a.Description ?? m.Name; return $"{Classes[c].Prefix} | {Alias.GetValueOrDefault(d, d)}"; }
            var baseline = methods.Where(t => t.a!.Baseline).Select(t => Name(t.a!, t.m)).FirstOrDefault();
            var python = Classes[c].Prefix.Split(',')[0];
            rows.AddRange(methods.Select(t => new Row(Name(t.a!, t.m),
                t.m.GetCustomAttribute<FloorAttribute>() is { } f ? (f.Description.Length == 0 ? null : $"{Classes[c].Prefix} | {f.Description}") : t.a!.Baseline ? null : baseline, c, t.m,
                python + Name(t.a!, t.m)[Classes[c].Prefix.Length..])));
        }
        var byName = rows.GroupBy(r => r.Name).ToDictionary(g => g.Key, g => g.First());
        output.WriteLine("ROWS " + JsonSerializer.Serialize(byName.Values.Select(r => new { name = r.Name, floor = r.Floor, python = r.Python }),
            new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        output.Flush();
        var instances = new Dictionary<int, object>();
        try
        {
            while (input.ReadLine() is { Length: > 0 } line)
            {
                var parts = line.Split('\t');
                try
                {
                    if (!byName.TryGetValue(parts[0], out var row)) throw new ArgumentException($"no row '{parts[0]}'");
                    int count = parts.Length > 1 ? int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) : 1;
                    if (!instances.TryGetValue(row.Class, out var instance))
                        instances[row.Class] = instance = SetUp(Classes[row.Class]);
                    var times = new double[count];
                    for (int i = 0; i < count; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        row.Method.Invoke(instance, null);
                        times[i] = sw.Elapsed.TotalMilliseconds;
                    }
                    output.WriteLine(JsonSerializer.Serialize(times));
                }
                catch (Exception e)
                {
                    output.WriteLine("ERROR " + (e is TargetInvocationException { InnerException: { } inner } ? inner.Message : e.Message).ReplaceLineEndings(" "));
                }
                output.Flush();
            }
        }
        finally
        {
            foreach (var instance in instances.Values)
                foreach (var m in instance.GetType().GetMethods().Where(m => m.GetCustomAttribute<GlobalCleanupAttribute>() is not null))
                    m.Invoke(instance, null);
        }
        return 0;
    }

    static object SetUp((Type Type, string Prefix, (string Field, object Value)[]? Param) c)
    {
        var instance = Activator.CreateInstance(c.Type)!;
        foreach (var (field, value) in c.Param ?? []) c.Type.GetField(field)!.SetValue(instance, value);
        foreach (var m in c.Type.GetMethods().Where(m => m.GetCustomAttribute<GlobalSetupAttribute>() is not null))
            m.Invoke(instance, null);
        return instance;
    }
}

/// <summary>The passes a technique needs when they are not its class's baseline row: the description of that row
/// (e.g. gradient methods: <c>forward+backward to input</c>); empty: the row is itself a floor.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class FloorAttribute(string description) : Attribute
{
    /// <summary>Description of the floor row in the same class.</summary>
    public string Description => description;
}
