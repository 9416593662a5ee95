using System.Reflection;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using TorchSharp;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Loupe.Onnx.Tests;

/// <summary>Paths and helpers of the ONNX backend tests.</summary>
public static class Env
{
    static Env()
    {
        // One intra-op thread per test process: libtorch slows down badly when threads compete for 2 cores.
        torch.set_num_threads(1);
    }

    public static string RepoRoot => Loupe.Testing.RepoPaths.Root;

    /// <summary>tests/fixtures/onnx: the ONNX fixtures and the script that made them.</summary>
    public static string FixtureRoot => Path.Combine(RepoRoot, "tests", "fixtures", "onnx");

    public static string Configuration => Loupe.Testing.RepoPaths.Configuration;

    public static string Fixture(string name) => Path.Combine(FixtureRoot, name);
    public static string LoupeFixture(string name) => Path.Combine(RepoRoot, "tests", "fixtures", name);
    public static string PluginDirectory => Path.Combine(RepoRoot, "plugins", "Loupe.Models.Onnx", "bin", Configuration, "net10.0");

    public static string TempDir() => Loupe.Testing.RepoPaths.TempDir("loupe-onnx");

    public static readonly ModelLoadContext Context = new("/", 0);

    public static IModel LoadOnnx(OnnxOptions o) => new OnnxAdapter().Load(o, Context);
    public static IModel LoadOrt(OnnxOptions o) => new OnnxRuntimeAdapter().Load(o, Context);

    /// <summary>Deterministic test input: sin(0.37 j) (values in [-1, 1]).</summary>
    public static float[] SinInput(long n, double scale = 1, double offset = 0) =>
        Enumerable.Range(0, (int)n).Select(j => (float)(offset + scale * Math.Sin(0.37 * j))).ToArray();

    /// <summary>Runs ONNX Runtime directly on a model file (the reference), returning the first output.</summary>
    public static (float[] Data, long[] Shape) OrtRun(string path, float[] x, long[] shape) => OrtRun(File.ReadAllBytes(path), x, shape);

    public static (float[] Data, long[] Shape) OrtRun(byte[] model, float[] x, long[] shape)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var s = new InferenceSession(model, options);
        var input = new DenseTensor<float>(x, shape.Select(d => (int)d).ToArray());
        using var r = s.Run([NamedOnnxValue.CreateFromTensor(s.InputMetadata.Keys.First(), input)]);
        var t = r.First().AsTensor<float>();
        return (t.ToArray(), t.Dimensions.ToArray().Select(d => (long)d).ToArray());
    }

    /// <summary>ONNX Runtime with its graph optimisations off, one thread: every operator of the file runs its own
    /// kernel (optimised, ONNX Runtime fuses QuantizeLinear/DequantizeLinear pairs into integer kernels that round
    /// differently). Returns the first output.</summary>
    public static (float[] Data, long[] Shape) OrtRunAsWritten(string path, float[] x, long[] shape)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var s = new InferenceSession(path, options);
        using var r = s.Run([NamedOnnxValue.CreateFromTensor(s.InputMetadata.Keys.First(), new DenseTensor<float>(x, shape.Select(d => (int)d).ToArray()))]);
        var t = r.First().AsTensor<float>();
        return (t.ToArray(), t.Dimensions.ToArray().Select(d => (long)d).ToArray());
    }

    /// <summary>The onnx backend's output for <paramref name="x"/> (an input that requires grad) beside ONNX Runtime's
    /// operator-by-operator run of the same file (<see cref="OrtRunAsWritten"/>), the shapes asserted equal. Tensors go
    /// to the caller's dispose scope; the caller disposes the model.</summary>
    public static (IModel Model, Tensor X, Tensor Y, float[] Expected) ForwardBesideOrt(string path, float[] x, long[] shape, string? ortPath = null)
    {
        var (expected, expectedShape) = OrtRunAsWritten(ortPath ?? path, x, shape);
        var model = LoadOnnx(new OnnxOptions { Path = path, FlattenOutput = false });
        var xt = tensor(x, shape).requires_grad_(true);
        var y = model.Forward(xt);
        Assert.Equal(expectedShape, y.shape);
        return (model, xt, y, expected);
    }

    /// <summary>The models (file names without .onnx, in order) of a fixture folder, as theory data.</summary>
    public static TheoryData<string> ModelsIn(string folder)
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Fixture(folder), "*.onnx").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileNameWithoutExtension(f));
        return data;
    }

    public static float[] Data(Tensor t) => t.detach().contiguous().to(ScalarType.Float32).cpu().ToArray<float>();

    /// <summary>Relative L2 error ‖a − b‖ / ‖b‖.</summary>
    public static double RelL2(float[] a, float[] b) => Loupe.Testing.Numbers.RelL2(a, b);

    /// <summary>The 'hash' weight formula of tests/fixtures/make_fixtures.py (also ModelTests.SetHashWeights).</summary>
    public static float[] HashValues(string name, long[] shape)
    {
        long n = shape.Aggregate(1L, (p, d) => p * d);
        var v = new float[n];
        int L = name.Length;
        double fanIn = shape.Length >= 2 ? n / (double)shape[0] : 1;
        for (long j = 0; j < n; j++)
        {
            uint x = unchecked((uint)j + (uint)L * 0x9E3779B9u);
            unchecked { x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16; }
            double s = Math.Sqrt(3) * (2.0 * x / 4294967296.0 - 1);
            v[j] = (float)(name.EndsWith("running_var") ? 1 + 0.5 * s
                : name.EndsWith("running_mean") || name.EndsWith("bias") ? 0.1 * s
                : shape.Length == 1 ? 1 + 0.1 * s
                : s / Math.Sqrt(fanIn));
        }
        return v;
    }

    /// <summary>The message with which the onnx backend refuses <paramref name="path"/> (it names the file).</summary>
    public static string Refusal(string path)
    {
        var e = Assert.Throws<Loupe.Abstractions.LoupeException>(() => { using var m = LoadOnnx(new OnnxOptions { Path = path }); });
        Assert.Contains(path, e.Message);
        return e.Message;
    }
}
