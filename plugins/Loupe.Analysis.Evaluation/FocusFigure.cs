using Loupe.Abstractions;
using Loupe.Abstractions.Toolkit;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>The figure of <c>focus</c>: the first mosaics it scored, each with the positive relevance of the linked
/// step's map over it, the explained class's two quadrants outlined, and its id, class and score under it.</summary>
sealed class FocusFigure(IAnalysisContext ctx)
{
    /// <summary>Most mosaics shown.</summary>
    public const int MaxTiles = 16;
    readonly List<RgbImage> tiles = [];
    readonly List<string?> captions = [];

    /// <summary>Whether more mosaics can be shown.</summary>
    public bool Wants => tiles.Count < MaxTiles;

    /// <summary>Adds mosaic <paramref name="mosaic"/> (C×H×W, model input) with its positive relevance
    /// <paramref name="positive"/> (C×H×W or H×W) and the quadrants of its class (top-left, top-right, bottom-left,
    /// bottom-right).</summary>
    public void Add(Tensor mosaic, Tensor positive, bool[] target, string id, string label, double score)
    {
        if (!Wants) return;
        using var scope = NewDisposeScope();
        long h = mosaic.shape[1], w = mosaic.shape[2];
        var pixels = ctx.Input.Denormalize(mosaic.unsqueeze(0)).clamp(0, 1);
        var map = (positive.dim() == 3 ? positive.sum([0]) : positive).unsqueeze(0).to(ScalarType.Float32);
        var overlay = Explain.StyledOverlays(pixels, map, null)[0];
        overlay = Display.Scale(overlay, Display.UpscaleFactor(overlay.Width));
        var quadrants = new (float X0, float Y0, float X1, float Y1)[] { (0, 0, w / 2, h / 2), (w / 2, 0, w, h / 2), (0, h / 2, w / 2, h), (w / 2, h / 2, w, h) };
        var marks = quadrants.Where((_, q) => target[q]).Select(b => new OverlayMark { Box = [b.X0, b.Y0, b.X1, b.Y1] });
        tiles.Add(Display.DrawMarks(overlay, marks, (int)h, (int)w));
        captions.Add($"{id}\n{label}\nfocus {(double.IsNaN(score) ? "NaN" : score.ToString("F2", System.Globalization.CultureInfo.InvariantCulture))}");
    }

    /// <summary>Writes <c>focus-grid</c> (nothing when no mosaic was added).</summary>
    public void Write(string of) => Explain.Grid(ctx.Output, "focus", tiles, captions,
        $"focus of '{of}': positive relevance on the mosaics; outlined, the explained class's quadrants", Explain.Bar(null));
}
