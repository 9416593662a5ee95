using System.Text.Json.Nodes;
using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Evaluation.Tests;

/// <summary>SkimageSlic against scikit-image 0.19's own slic (tests/fixtures/make_slic_fixtures.py), as Quantus's IROF
/// calls it: grey and RGB inputs of several sizes, segment counts and compactness.</summary>
public class SkimageSlicTests
{
    [Fact]
    public void LabelsAreScikitImages()
    {
        var root = Path.Combine(Env.RepoRoot, "tests", "fixtures", "quality");
        var cases = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "slic_cases.json")))!["cases"]!.AsArray();
        Assert.Equal(5, cases.Count);
        foreach (var c in cases)
        {
            string name = c!["name"]!.GetValue<string>();
            int h = c["h"]!.GetValue<int>(), w = c["w"]!.GetValue<int>(), ch = c["c"]!.GetValue<int>();
            var image = Npy.Read(Path.Combine(root, name + "_image.npy")).Data.Select(v => (double)v).ToArray();
            var want = Npy.Read(Path.Combine(root, name + "_labels.npy")).Data.Select(v => (int)v).ToArray();
            var got = SkimageSlic.Segment(image, h, w, ch, c["segments"]!.GetValue<int>(), c["compactness"]!.GetValue<double>());
            int differ = want.Where((v, i) => v != got[i]).Count();
            Assert.True(differ == 0, $"{name} ({h}×{w}×{ch}): {differ} of {want.Length} labels differ; {got.Max() + 1} segments against {c["count"]}");
        }
    }
}
