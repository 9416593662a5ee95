using System.Text.Json.Nodes;
using Loupe.Analysis.Synthesis;
using static TorchSharp.torch;

namespace Loupe.Synthesis.Tests;

/// <summary><c>transforms: lucent</c> and <c>jitter_after</c>: Lucent's transforms (its transform.py) — jitter crops,
/// random_scale resizes to ⌈s·H⌉ with align_corners and pads a smaller image with zeros, random_rotate is kornia's
/// zero-filled rotation — checked on closed forms.</summary>
public class LucentTransformTests
{
    static LucentTransformTests() => _ = Env.RepoRoot;

    [Fact]
    public void JitterCropsAWindowSmallerByD()
    {
        using var scope = NewDisposeScope();
        var x = arange(2 * 3 * 10 * 12, dtype: ScalarType.Float32).view(2, 3, 10, 12);
        var c = Transforms.Crop(x, 4, new Generator(3));
        Assert.Equal([2L, 3, 6, 8], c.shape);
        // A window: its first value locates it, and every value follows from that offset.
        long first = (long)c[0, 0, 0, 0].item<float>(), dy = first / 12, dx = first % 12;
        Assert.InRange(dy, 0, 3); Assert.InRange(dx, 0, 3);
        Assert.Equal(x[.., .., (int)dy..(int)(dy + 6), (int)dx..(int)(dx + 8)].ToArray<float>(), c.ToArray<float>());
    }

    [Fact]
    public void ScaleResizesWithAlignedCornersAndPadsWithZerosWhenSmaller()
    {
        using var scope = NewDisposeScope();
        // A ramp along the rows stays a ramp under an align-corners bilinear resize: row j of ⌈s·H⌉ holds j / (⌈s·H⌉ − 1).
        var ramp = (arange(10, dtype: ScalarType.Float32) / 9).view(1, 1, 10, 1).expand(1, 1, 10, 12).contiguous();
        Assert.Equal(ramp.ToArray<float>(), Transforms.ScaleResize(ramp, 1).ToArray<float>());
        var up = Transforms.ScaleResize(ramp, 1.2);
        Assert.Equal([1L, 1, 12, 15], up.shape);                         // ⌈12.0⌉ (1.2·10 = 12 in binary too), ⌈14.4⌉
        for (int j = 0; j < 12; j++) Assert.Equal(j / 11f, up[0, 0, j, 7].item<float>(), 5);
        var down = Transforms.ScaleResize(ramp, 0.9);
        Assert.Equal([1L, 1, 11, 13], down.shape);                       // 9 × 11 (⌈10.8⌉) padded by ⌈0.5⌉ = 1 each side
        Assert.Equal(0f, down[0, 0, 0].abs().max().item<float>());
        Assert.Equal(0f, down[0, 0, .., 0].abs().max().item<float>());
        for (int j = 0; j < 9; j++) Assert.Equal(j / 8f, down[0, 0, j + 1, 6].item<float>(), 5);
    }

    [Fact]
    public void RotationIsCounterClockwiseAboutTheCentreWithZerosOutside()
    {
        using var scope = NewDisposeScope();
        var sq = randn([2, 3, 9, 9], generator: new Generator(1));
        // 90°: torch.rot90 over (H, W), numpy's counter-clockwise; exact at the grid points with aligned corners.
        Assert.True((Transforms.RotateZeros(sq, 90) - sq.rot90(1, (2, 3))).abs().max().item<float>() < 1e-5);
        // 180° on a non-square image: both axes flipped (the pixel-space rotation, not one of normalised coordinates).
        var rect = randn([1, 2, 7, 12], generator: new Generator(2));
        Assert.True((Transforms.RotateZeros(rect, 180) - rect.flip(2, 3)).abs().max().item<float>() < 1e-5);
        // 45° of a constant image: zeros at the corners (outside the rotated square), the value at the centre.
        var r = Transforms.RotateZeros(ones(1, 1, 9, 9), 45);
        Assert.Equal(0f, r[0, 0, 0, 0].item<float>());
        Assert.Equal(1f, r[0, 0, 4, 4].item<float>(), 5);
    }

    /// <summary>On the demo CNN (global average pooling: it takes any size) Lucent's standard transforms, the images
    /// varying in size each step, still raise the channel.</summary>
    [Fact]
    public void LucentsStandardTransformsOptimiseAChannel()
    {
        const string With = "objective: 'relu3:5', transforms: lucent, pad: 12, jitter: 8, scales: [0.9, 0.92, 0.94, 0.96, 0.98, 1, 1.02, 1.04, 1.06, 1.08, 1.1], rotations: [-10, -5, 0, 0, 0, 5, 10], jitter_after: 4, steps: 40, parameterization: pixels, init_sd: 0.1";
        var r = Env.Run(Env.DemoPipeline($$"""
              - { id: a, uses: activation-max, with: { {{With}} } }
            """, seed: 2));
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?.ToJsonString());
        var row = JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutDir!, "a", "objectives.json")))!.AsArray()[0]!;
        Assert.True(row["final"]!.GetValue<double>() > row["start"]!.GetValue<double>() + 0.5, row.ToJsonString());
        // The image keeps its size: only what the model sees varies.
        Assert.Equal([1L, 28, 28], Env.Artifact(r, "a/00-relu3-5.image.npy").Shape);
    }
}
