using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Evaluation.Tests;

/// <summary>SkimageFelzenszwalb against scikit-image 0.19's own felzenszwalb (tests/fixtures/make_felzenszwalb_fixtures.py):
/// grey and RGB inputs of several sizes, scales, sigmas and minimum sizes, and Fashion-MNIST inputs with Quantus's
/// defaults (flat backgrounds).</summary>
public class SkimageFelzenszwalbTests
{
    [Fact]
    public void LabelsAreScikitImages()
    {
        var root = Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality");
        var cases = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "felz_cases.json")))!["cases"]!.AsArray();
        Assert.Equal(9, cases.Count);
        var failures = new List<string>();
        foreach (var c in cases)
        {
            string name = c!["name"]!.GetValue<string>();
            int h = c["h"]!.GetValue<int>(), w = c["w"]!.GetValue<int>(), ch = c["c"]!.GetValue<int>();
            var image = Npy.Read(Path.Combine(root, name + "_image.npy")).Data.Select(v => (double)v).ToArray();
            var want = Npy.Read(Path.Combine(root, name + "_labels.npy")).Data.Select(v => (int)v).ToArray();
            var got = SkimageFelzenszwalb.Segment(image, h, w, ch, c["scale"]!.GetValue<double>(), c["sigma"]!.GetValue<double>(), c["min_size"]!.GetValue<int>());
            int differ = want.Where((v, i) => v != got[i]).Count();
            if (differ > 0) failures.Add($"{name} ({h}×{w}×{ch}): {differ} of {want.Length} labels differ; {got.Max() + 1} segments against {c["count"]}");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        Assert.Throws<ArgumentException>(() => SkimageFelzenszwalb.Segment(new double[5], 2, 2, 1));
        Assert.Throws<ArgumentException>(() => SkimageFelzenszwalb.Segment(new double[4], 2, 2, 1, scale: 0));
        // One pixel: one segment; a flat image: one segment whatever its size.
        Assert.Equal([0], SkimageFelzenszwalb.Segment([3.0], 1, 1, 1));
        Assert.All(SkimageFelzenszwalb.Segment(new double[12 * 9], 12, 9, 1), l => Assert.Equal(0, l));
    }

    [Fact]
    public void IrofTakesOneSegmentation()
    {
        var r = Env.Run($$"""
            version: 1
            model: { uses: torchvision, with: { architecture: fashion-cnn, weights: {{Env.DemoWeights}} } }
            data: { uses: npy, with: { path: {{Env.Yaml(Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality", "quantus", "inputs.npy"))}} } }
            steps:
              - { id: sal, uses: saliency }
              - { id: irof, uses: irof, with: { of: sal, cell: 4, segmentation: felzenszwalb } }
            """);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("options 'cell' and 'segmentation' both choose the segments", string.Join("\n", r.Errors));
    }
}
