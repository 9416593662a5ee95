using System.Globalization;
using Loupe.Abstractions;
using Loupe.Models.Onnx;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Onnx.Tests;

/// <summary>Every torchvision classification family, exported by PyTorch (tests/fixtures/onnx/make_family_fixtures.py:
/// the torchvision classes at reduced width/depth, random weights, opsets 13 and 17), run through the differentiable
/// onnx backend: logits and input gradients against PyTorch's.</summary>
public class FamilyTests
{
    public static string Folder => Env.Fixture("families");

    public static TheoryData<string> Families()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Folder, "*.onnx").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileNameWithoutExtension(f));
        return data;
    }

    /// <summary>The reference written next to a model: size, predicted classes and PyTorch's own float32/float64 gradient difference.</summary>
    public sealed record Reference(int Size, long[] Classes, double Tolerance, NdArray Logits, NdArray Grad)
    {
        public static Reference Read(string folder, string name)
        {
            var kv = File.ReadAllLines(Path.Combine(folder, name + ".txt")).Select(l => l.Split(' ', 2)).ToDictionary(p => p[0], p => p[1]);
            return new Reference(int.Parse(kv["size"], CultureInfo.InvariantCulture),
                kv["classes"].Split(' ').Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray(),
                double.Parse(kv["tol"], CultureInfo.InvariantCulture),
                Npy.Read(Path.Combine(folder, name + ".logits.npy")), Npy.Read(Path.Combine(folder, name + ".grad.npy")));
        }
    }

    /// <summary>Runs one exported model against its reference: logits within 1e-4 (relative to the largest logit),
    /// input gradient within max(1e-3, 10 × PyTorch's float32/float64 difference) in relative L2.</summary>
    internal static void Compare(string path, Reference r, string name)
    {
        using var model = Env.LoadOnnx(new OnnxOptions { Path = path });
        using var scope = NewDisposeScope();
        var x = tensor(Env.SinInput(2L * 3 * r.Size * r.Size), [2, 3, r.Size, r.Size]).requires_grad_(true);
        var y = model.Forward(x);
        Assert.Equal(r.Logits.Shape, y.shape);
        var logits = Env.Data(y);
        double scale = r.Logits.Data.Max(v => Math.Abs(v));
        double err = logits.Zip(r.Logits.Data).Max(p => Math.Abs(p.First - p.Second)) / scale;
        Assert.True(err <= 1e-4, $"{name}: logits differ by {err:E2} (relative to the largest)");
        var picked = y.gather(1, tensor(r.Classes).view(-1, 1)).sum();
        var g = CheckedOps.Grad([picked], [x])[0];
        double gerr = Env.RelL2(Env.Data(g), r.Grad.Data), bound = Math.Max(1e-3, 10 * r.Tolerance);
        Assert.True(gerr <= bound, $"{name}: input gradient rel-L2 {gerr:E2} > {bound:E2}");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LogitsAndInputGradientsMatchPyTorch(string name) =>
        Compare(Path.Combine(Folder, name + ".onnx"), Reference.Read(Folder, name), name);
}
