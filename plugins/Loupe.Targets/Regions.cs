using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Options of <c>region</c>.</summary>
public sealed record RegionOptions
{
    /// <summary>Class.</summary>
    [Required, Shorthand, Description("the segmentation class k (index, or a name from the model's labels)")]
    public string Class { get; init; } = "";

    /// <summary>Mask file.</summary>
    [FilePath, Description("mask file: a PNG (pixels brighter than 127 are inside) or an .npy (H×W, non-zero inside), resized to the output by nearest neighbour; default: the model's own argmax mask for the class")]
    public string? Mask { get; init; }

    /// <summary>Box.</summary>
    [Description("a box instead of a mask: [x1, y1, x2, y2] in input pixels (x2, y2 exclusive)")]
    public double[]? Box { get; init; }

    /// <summary>Score mode.</summary>
    [Description("what is summed: logit (the raw output, as pytorch-grad-cam) or softmax / log-softmax over the classes (dim 1)")]
    public ScoreMode Mode { get; init; } = ScoreMode.Logit;
}

/// <summary>Semantic segmentation: explain "class k over this region", the sum of the class-k output over the pixels of
/// a mask (pytorch-grad-cam's SemanticSegmentationTarget: <c>(output[k] · mask).sum()</c>). The model's output must
/// stay N×K×H×W (<c>flatten_output: false</c> on the onnx backends). The mask is the model's own argmax for k (chosen
/// once, on the unperturbed input), a file, or a box; overlays draw its outline.</summary>
public sealed class RegionTargetFactory : TargetFactory<RegionOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(RegionOptions options, TargetContext context)
    {
        long k = ClassTargetFactory.Resolve(options.Class, context.Labels, context.OutputSize);
        if (options.Mask is not null && options.Box is not null) throw new LoupeException("region: give 'mask' or 'box', not both");
        if (options.Box is { } b && (b.Length != 4 || b[2] <= b[0] || b[3] <= b[1]))
            throw new LoupeException($"region: box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got [{string.Join(", ", b)}]");
        if (options.Mode is ScoreMode.Sigmoid or ScoreMode.Rest) throw new LoupeException($"region: mode {ScoreModes.Name(options.Mode)} is not defined for a segmentation output; use logit, softmax or log-softmax");
        (bool[] Data, int Height, int Width)? mask = options.Mask is null ? null : ReadMask(options.Mask);
        var label = k < context.Labels.Count ? $"class {k} ({context.Labels[(int)k]})" : $"class {k}";
        return new Region(k, label, mask, options.Box, options.Mask is null ? null : Path.GetFileName(options.Mask), options.Mode, context.Input);
    }

    /// <summary>A mask file as rows of booleans.</summary>
    internal static (bool[] Data, int Height, int Width) ReadMask(string file)
    {
        if (file.EndsWith(".npy", StringComparison.OrdinalIgnoreCase))
        {
            var a = Npy.Read(file);
            var shape = a.Shape.Where(d => d != 1).ToArray();
            if (shape.Length != 2) throw new LoupeException($"{file}: a mask must be H×W (or 1×H×W), got ({string.Join("×", a.Shape)})");
            return (a.Data.Select(v => v != 0).ToArray(), (int)shape[0], (int)shape[1]);
        }
        try
        {
            var info = SixLabors.ImageSharp.Image.Identify(file) ?? throw new LoupeException($"{file}: not a recognised image");
            if ((long)info.Width * info.Height > 64L * 1024 * 1024) throw new LoupeException($"{file}: mask image is too large");
            using var img = SixLabors.ImageSharp.Image.Load<L8>(file);
            var px = new byte[img.Width * img.Height];
            img.CopyPixelDataTo(px);
            return (px.Select(v => v > 127).ToArray(), img.Height, img.Width);
        }
        catch (Exception e) when (e is not LoupeException) { throw new LoupeException($"{file}: cannot read the mask ({e.Message})", e); }
    }

    /// <summary>The region of one row at output resolution.</summary>
    sealed record RowMask(bool[] Inside, int Height, int Width);

    sealed class Region(long k, string label, (bool[] Data, int Height, int Width)? file, double[]? box, string? fileName, ScoreMode mode, InputSpec? input) : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [];

        public TargetSelection Select(TargetInput original)
        {
            var y = Check(original.Output);
            int n = (int)y.shape[0], h = (int)y.shape[2], w = (int)y.shape[3];
            var masks = new RowMask[n];
            if (file is { } f) Array.Fill(masks, new RowMask(Resample(f.Data, f.Height, f.Width, h, w), h, w));
            else if (box is { } b) Array.Fill(masks, new RowMask(BoxMask(b, h, w), h, w));
            else
            {
                using var scope = NewDisposeScope();
                var inside = y.detach().argmax(1).eq(k).cpu().contiguous();
                var all = inside.ToArray<bool>();
                for (int i = 0; i < n; i++) masks[i] = new RowMask(all.AsSpan(i * h * w, h * w).ToArray(), h, w);
            }
            var labels = masks.Select(m => $"{label} over {Source()} ({m.Inside.Count(v => v)} px)").ToArray();
            return new TargetSelection(Enumerable.Repeat(k, n).ToArray(), labels)
            {
                State = masks,
                Marks = masks.Select(m => new[] { new OverlayMark { Mask = m.Inside, MaskHeight = m.Height, MaskWidth = m.Width } }).ToArray(),
            };
        }

        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var y = Check(input.Output);
            int n = (int)y.shape[0], h = (int)y.shape[2], w = (int)y.shape[3];
            if (selection.State is not { } state || state.Count != n || state.Any(s => s is not RowMask m || m.Height != h || m.Width != w))
                throw new LoupeException($"target '{Describe()}': no region for this output ({string.Join("×", y.shape)}); the selection was not made by this target");
            var inside = state.Cast<RowMask>().SelectMany(m => m.Inside).Select(v => v ? 1f : 0f).ToArray();
            var mask = tensor(inside, [n, h, w], device: y.device).to(y.dtype);
            var scores = ScoreModes.Apply(y, mode).select(1, k);
            return scope.MoveToOuter((scores * mask).sum([1, 2]));
        }

        Tensor Check(Tensor y)
        {
            if (y.dim() != 4)
                throw new LoupeException($"target '{Describe()}': the model output is ({string.Join("×", y.shape)}), a segmentation output is N×K×H×W (on the onnx backends set flatten_output: false)");
            if (k >= y.shape[1]) throw new LoupeException($"target '{Describe()}': the output has {y.shape[1]} classes");
            return y;
        }

        bool[] BoxMask(double[] b, int h, int w)
        {
            // Box in input pixels → output pixels (the output may be smaller than the input).
            double sy = input is null ? 1 : h / (double)input.Height, sx = input is null ? 1 : w / (double)input.Width;
            int x1 = Math.Clamp((int)Math.Floor(b[0] * sx), 0, w), x2 = Math.Clamp((int)Math.Ceiling(b[2] * sx), 0, w);
            int y1 = Math.Clamp((int)Math.Floor(b[1] * sy), 0, h), y2 = Math.Clamp((int)Math.Ceiling(b[3] * sy), 0, h);
            var m = new bool[h * w];
            for (int y = y1; y < y2; y++) for (int x = x1; x < x2; x++) m[y * w + x] = true;
            return m;
        }

        static bool[] Resample(bool[] m, int mh, int mw, int h, int w)
        {
            if (mh == h && mw == w) return m;
            var r = new bool[h * w];
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    r[y * w + x] = m[(int)(y * (long)mh / h) * mw + (int)(x * (long)mw / w)];
            return r;
        }

        string Source() => fileName is not null ? fileName : box is { } b ? $"box [{string.Join(", ", b)}]" : "its argmax mask";

        public string Describe() => $"region {label} over {Source()}{(mode == ScoreMode.Logit ? "" : $" ({ScoreModes.Name(mode)})")}";
    }
}
