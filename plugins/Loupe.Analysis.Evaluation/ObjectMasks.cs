using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Analysis.Evaluation;

/// <summary>Object masks of the localisation metrics, from (first that applies) a folder of masks keyed by input id,
/// a boxes file keyed by input id, the data source's masks, or display pixels above a threshold.</summary>
public static class ObjectMasks
{
    /// <summary>Option description of the masks folder.</summary>
    public const string MasksDescription = "folder of object masks, one per input id: <id>.npy (H×W or 1×H×W, non-zero = object) or <id>.png (grey > 127 = object); resized (nearest) to the model input; overrides the data source's masks";
    /// <summary>Option description of the boxes file.</summary>
    public const string BoxesDescription = "CSV file of object boxes 'id,x0,y0,x1,y1' (pixels of the model input, x1/y1 exclusive; several lines per id are united; a header line is allowed); an input without a line has an empty mask";

    /// <summary>Byte cap of one mask file (a PNG mask of the largest allowed image compresses far below it).</summary>
    public const long MaxMaskBytes = 64L << 20;

    /// <summary>N×H×W bool masks of a batch.</summary>
    public static Tensor For(InputBatch batch, string? masks, string? boxes, double threshold)
    {
        using var scope = NewDisposeScope();
        long h = batch.Input.shape[2], w = batch.Input.shape[3];
        Tensor m;
        if (masks is not null) m = stack(batch.Ids.Select(id => FromFolder(masks, id, h, w)).ToArray());
        else if (boxes is not null)
        {
            var all = ReadBoxes(boxes);
            m = stack(batch.Ids.Select(id => FromBoxes(all.GetValueOrDefault(id), h, w)).ToArray());
        }
        else m = batch.Masks is { } known ? known[.., 0] > 0.5f : Maps.ObjectMask(batch.Pixels, threshold);
        return scope.MoveToOuter(m.contiguous());
    }

    static Tensor FromFolder(string folder, string id, long h, long w)
    {
        using var scope = NewDisposeScope();
        // The id names the file: one that would lead outside the folder (../, an absolute path, a link) is refused.
        string npy = SafeFile.Inside(folder, id + ".npy", $"option 'masks': input '{SafeFile.Printable(id)}'"),
            png = SafeFile.Inside(folder, id + ".png", $"option 'masks': input '{SafeFile.Printable(id)}'");
        Tensor m;
        if (File.Exists(npy))
        {
            SafeFile.RequireRegular(npy, $"option 'masks': {npy}");
            m = Npy.Read(npy, ImageFiles.MaxPixels).ToTensor().to(ScalarType.Float32);
            if (m.dim() == 3 && m.shape[0] == 1) m = m[0];
            if (m.dim() != 2) throw new LoupeException($"{npy}: a mask must be H×W or 1×H×W, not ({string.Join("×", m.shape)})");
            m = (m != 0).to(ScalarType.Float32);
        }
        else if (File.Exists(png))
        {
            // Capped read and a header check against the pixel limit before decoding (settings.max_image_pixels' default).
            var img = ImageFiles.Read(png, $"option 'masks': {png}", MaxMaskBytes);
            m = (tensor(img.Pixels.Select(p => (float)p).ToArray()).view(img.Height, img.Width, 3).amax([2]) > 127f).to(ScalarType.Float32);
        }
        else throw new LoupeException($"option 'masks': folder '{folder}' has no mask for input '{id}' (expected {id}.npy or {id}.png)");
        if (m.shape[0] != h || m.shape[1] != w)
            m = nn.functional.interpolate(m.view(1, 1, m.shape[0], m.shape[1]), [h, w], mode: InterpolationMode.Nearest).view(h, w);
        return scope.MoveToOuter(m > 0.5f);
    }

    static Tensor FromBoxes(List<(int X0, int Y0, int X1, int Y1)>? list, long h, long w)
    {
        var m = zeros(h, w, dtype: ScalarType.Bool);
        foreach (var (x0, y0, x1, y1) in list ?? [])
            m[TensorIndex.Slice(Math.Clamp(y0, 0, h), Math.Clamp(y1, 0, h)), TensorIndex.Slice(Math.Clamp(x0, 0, w), Math.Clamp(x1, 0, w))] = true;
        return m;
    }

    /// <summary>Boxes per input id from a CSV file <c>id,x0,y0,x1,y1</c>.</summary>
    public static Dictionary<string, List<(int X0, int Y0, int X1, int Y1)>> ReadBoxes(string file)
    {
        var result = new Dictionary<string, List<(int, int, int, int)>>();
        foreach (var (line, id, c) in IdCsv.Integers(file, 4, "'id,x0,y0,x1,y1' (pixel coordinates)"))
        {
            if (c[2] <= c[0] || c[3] <= c[1]) throw new LoupeException($"{file}:{line}: empty box (x1 must exceed x0 and y1 must exceed y0)");
            if (!result.TryGetValue(id, out var l)) result[id] = l = [];
            l.Add((c[0], c[1], c[2], c[3]));
        }
        return result;
    }
}
