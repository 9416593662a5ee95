using Loupe.Abstractions;
using SixLabors.ImageSharp;

namespace Loupe;

/// <summary>An image to explain: a file, encoded bytes (PNG, JPEG, ...) or decoded pixels. It reaches the model through
/// the same <c>image-folder</c> data source (decoding limits, resizing, ÷255, normalisation) as in a pipeline, so the
/// library and the CLI see identical input tensors.</summary>
public sealed class ImageInput
{
    /// <summary>Input id: the file name the image is given in the run (also the key of its results).</summary>
    public string Id { get; }
    readonly Func<byte[]> _bytes;

    ImageInput(string id, Func<byte[]> bytes) { Id = id; _bytes = bytes; }

    /// <summary>An image file (its name is the input id).</summary>
    public static ImageInput FromFile(string path)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"image not found: {full}", full);
        return new ImageInput(Path.GetFileName(full), () => File.ReadAllBytes(full));
    }

    /// <summary>Encoded image bytes (PNG, JPEG, BMP, GIF, TGA, WebP, TIFF); <paramref name="id"/> names it in the results.
    /// The format is read from the bytes, not from the id.</summary>
    public static ImageInput FromBytes(byte[] encoded, string id = "input")
    {
        ArgumentNullException.ThrowIfNull(encoded);
        var format = Image.DetectFormat(encoded) ?? throw new LoupeException($"image '{id}': not a recognised image format");
        var ext = "." + format.FileExtensions.First();
        var name = Path.GetFileNameWithoutExtension(Safe(id));
        return new ImageInput(name + ext, () => encoded);
    }

    /// <summary>Decoded 8-bit RGB pixels.</summary>
    public static ImageInput FromImage(RgbImage image, string id = "input")
    {
        ArgumentNullException.ThrowIfNull(image);
        return new ImageInput(Path.GetFileNameWithoutExtension(Safe(id)) + ".png", () => Core.Png.Encode(image));
    }

    /// <summary>A path is a file input.</summary>
    public static implicit operator ImageInput(string path) => FromFile(path);

    internal void WriteTo(string folder) => File.WriteAllBytes(Path.Combine(folder, Id), _bytes());

    static string Safe(string id)
    {
        var s = string.Concat(id.Select(c => char.IsLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_')).TrimStart('.');
        return s.Length == 0 ? "input" : s;
    }
}
