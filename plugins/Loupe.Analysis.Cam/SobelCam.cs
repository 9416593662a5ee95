using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Cam;

/// <summary>Options of <c>sobel-cam</c> (none).</summary>
public sealed record SobelCamOptions;

/// <summary>Sobel-CAM (pytorch-grad-cam's <c>sobel_cam</c>): not a model explanation but its edge-map baseline — the
/// input's uint8 pixels (p·255 rounded) to grey as OpenCV's RGB2GRAY ((9798 R + 19235 G + 3735 B + 2¹⁴) ≫ 15, equal to
/// OpenCV 4.6's on all 2²⁴ colours; a grey input as it is), Sobel derivatives in x and y (3×3, reflect-101 borders), each |·| saturated to 0…255
/// (convertScaleAbs), and their mean rounded half to even (addWeighted 0.5, 0.5). The map holds those 0…255 values; a
/// metric compares it after scaling (<c>scale: true</c>) or thresholds it, as pytorch-grad-cam's metric examples do.
/// No forward pass beyond choosing the target the map is recorded for.</summary>
public sealed class SobelCam : AttributionAnalysis<SobelCamOptions>
{
    /// <inheritdoc/>
    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);
    /// <inheritdoc/>
    public override string ArtifactName => "sobel-cam";

    /// <inheritdoc/>
    public override AttributionResult Attribute(SobelCamOptions options, AttributionInput input)
    {
        var ctx = input.Context;
        var (_, _, selection) = Explain.Scores(ctx, input.Input, input.Selection, input.Slot);
        using var scope = NewDisposeScope();
        var pixels = ctx.Input.Denormalize(input.Input).to(ScalarType.Float32).cpu().contiguous();
        long n = pixels.shape[0], c = pixels.shape[1], h = pixels.shape[2], w = pixels.shape[3];
        var values = pixels.ToArray<float>();
        var map = new float[n * h * w];
        var grey = new int[h * w];
        for (long i = 0; i < n; i++)
        {
            long plane = h * w, at = i * c * plane;
            int Byte(long k) => (int)Math.Clamp(Math.Round(values[k] * 255.0, MidpointRounding.ToEven), 0, 255);
            for (long p = 0; p < plane; p++)
                grey[p] = c == 3 ? (9798 * Byte(at + p) + 19235 * Byte(at + plane + p) + 3735 * Byte(at + 2 * plane + p) + (1 << 14)) >> 15
                    : Byte(at + p);
            Sobel(grey, (int)h, (int)w, map.AsSpan((int)(i * plane), (int)plane));
        }
        return new AttributionResult(scope.MoveToOuter(tensor(map, [n, h, w]).to(input.Input.device)), selection);
    }

    /// <summary>OpenCV's Sobel (ksize 3, BORDER_REFLECT_101) in x and y of a uint8 image, convertScaleAbs of each and
    /// addWeighted(0.5, 0.5, 0) with uint8 saturation and rounding half to even.</summary>
    static void Sobel(int[] g, int h, int w, Span<float> result)
    {
        int At(int y, int x)
        {
            y = y < 0 ? Math.Min(-y, h - 1) : y >= h ? Math.Max(2 * h - 2 - y, 0) : y;
            x = x < 0 ? Math.Min(-x, w - 1) : x >= w ? Math.Max(2 * w - 2 - x, 0) : x;
            return g[y * w + x];
        }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int dx = At(y - 1, x + 1) - At(y - 1, x - 1) + 2 * (At(y, x + 1) - At(y, x - 1)) + At(y + 1, x + 1) - At(y + 1, x - 1);
                int dy = At(y + 1, x - 1) - At(y - 1, x - 1) + 2 * (At(y + 1, x) - At(y - 1, x)) + At(y + 1, x + 1) - At(y - 1, x + 1);
                int ax = Math.Min(Math.Abs(dx), 255), ay = Math.Min(Math.Abs(dy), 255);
                result[y * w + x] = (float)Math.Min(255, Math.Round(0.5f * ax + 0.5f * ay, MidpointRounding.ToEven));
            }
    }
}
