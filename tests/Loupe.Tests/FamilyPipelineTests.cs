using Loupe.Abstractions;

namespace Loupe.Tests;

/// <summary>Every torchvision family (tests/fixtures/onnx/families, opset 17) through a whole pipeline on the onnx
/// backend: the saliency of the predicted class equals max over channels of |PyTorch's input gradient|.</summary>
public class FamilyPipelineTests
{
    static string Folder => Path.Combine(TestEnv.Fixtures, "onnx", "families");

    public static TheoryData<string> Families()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Folder, "*.onnx").Select(Path.GetFileNameWithoutExtension).Where(n => !n!.Contains("_op")).Order(StringComparer.Ordinal))
            data.Add(f!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void SaliencyOfThePredictedClassIsPyTorchsGradient(string name)
    {
        var size = int.Parse(File.ReadLines(Path.Combine(Folder, name + ".txt")).First().Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var dir = TestEnv.TempDir();
        var x = Enumerable.Range(0, 2 * 3 * size * size).Select(j => (float)Math.Sin(0.37 * j)).ToArray();
        File.WriteAllBytes(Path.Combine(dir, "x.npy"), Npy.Encode(new NdArray(x, [2, 3, size, size])));
        var r = TestEnv.Run(TestEnv.Pipeline($$"""
            version: 1
            name: {{name}}
            model:
              uses: onnx
              with: { path: {{TestEnv.Yaml(Path.Combine(Folder, name + ".onnx"))}}, mean: [0], std: [1] }
            data:
              uses: npy
              with: { path: x.npy }
            steps:
              - id: sal
                uses: saliency
                with: { reduce: max, abs: true }
            """, dir));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var g = Npy.Read(Path.Combine(Folder, name + ".grad.npy")).Data;
        long hw = size * size;
        var expected = new float[2 * hw];
        for (int n = 0; n < 2; n++)
            for (long p = 0; p < hw; p++)
                expected[n * hw + p] = Enumerable.Range(0, 3).Max(c => Math.Abs(g[(n * 3 + c) * hw + p]));
        var actual = TechniqueTests.Stack(r, "sal", "saliency", 2);
        double err = TestEnv.RelL2(actual, expected);
        Assert.True(err <= 1e-3, $"{name}: saliency rel-L2 {err:E2}");
    }
}
