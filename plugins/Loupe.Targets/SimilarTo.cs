using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using Loupe.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace Loupe.Targets;

/// <summary>Options of <c>similar-to</c>.</summary>
public sealed record SimilarToOptions
{
    /// <summary>Reference image.</summary>
    [Required, FilePath, Description("reference image (PNG/JPEG, preprocessed like image-folder) or a preprocessed .npy (C×H×W or 1×C×H×W)")]
    public string Image { get; init; } = "";
    /// <summary>Embedding layer.</summary>
    [Required, Description("layer whose output is the embedding (4-D outputs are averaged over space)")]
    public string Layer { get; init; } = "";
}

/// <summary>Explain why an input is close to a reference image: the score is the cosine similarity between the input's
/// embedding at a layer and the reference's. Works for feature extractors without a classifier head (e.g. the ML.NET
/// ResNet-18), where class targets do not exist.</summary>
public sealed class SimilarToTargetFactory : TargetFactory<SimilarToOptions>
{
    /// <inheritdoc/>
    public override ITarget Create(SimilarToOptions options, TargetContext context)
    {
        if (!context.Layers.Contains(options.Layer))
            throw new LoupeException($"layer '{options.Layer}' does not exist{Suggest.DidYouMean(options.Layer, context.Layers)}");
        if (context.Model is null || context.Input is null) throw new LoupeException("similar-to needs the model (host too old)");
        using var scope = NewDisposeScope();
        var x = LoadReference(options.Image, context.Input);
        Tensor reference;
        using (no_grad())
        using (var cap = context.Model.Capture([options.Layer], forGradients: false))
        {
            context.Model.Forward(x);
            reference = Embed(cap[options.Layer]).detach().clone();
        }
        reference.DetachFromDisposeScope();
        return new Similarity(options.Layer, reference, Path.GetFileName(options.Image));
    }

    /// <summary>Embedding of a layer output: spatial mean for N×C×H×W, flattened otherwise.</summary>
    internal static Tensor Embed(Tensor a) => a.dim() == 4 ? a.mean([2, 3]) : a.flatten(1);

    static Tensor LoadReference(string file, InputSpec spec)
    {
        if (file.EndsWith(".npy", StringComparison.OrdinalIgnoreCase))
        {
            var t = Npy.Read(file).ToTensor();
            if (t.dim() == 3) t = t.unsqueeze(0);
            if (t.dim() != 4 || t.shape[0] != 1 || t.shape[1] != spec.Channels || t.shape[2] != spec.Height || t.shape[3] != spec.Width)
                throw new LoupeException($"{file}: shape ({string.Join("×", t.shape)}) does not match the model input 1×{spec.Channels}×{spec.Height}×{spec.Width}");
            return t;
        }
        Image<Rgb24> img;
        try
        {
            var info = SixLabors.ImageSharp.Image.Identify(file) ?? throw new LoupeException($"{file}: not a recognised image");
            if ((long)info.Width * info.Height > 64L * 1024 * 1024) throw new LoupeException($"{file}: image is too large");
            img = SixLabors.ImageSharp.Image.Load<Rgb24>(file);
        }
        catch (Exception e) when (e is not LoupeException) { throw new LoupeException($"{file}: cannot read the reference image ({e.Message})", e); }
        using (img)
        {
            img.Mutate(c => c.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(spec.Width, spec.Height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Triangle }));
            var px = new byte[spec.Width * spec.Height * 3];
            img.CopyPixelDataTo(px);
            var hwc = tensor(px, [spec.Height, spec.Width, 3]).to(ScalarType.Float32) / 255f;
            var chw = hwc.permute(2, 0, 1);
            if (spec.Channels == 1) // ITU-R BT.709 luma, as image-folder's grey conversion
                chw = (0.2126f * chw[0] + 0.7152f * chw[1] + 0.0722f * chw[2]).unsqueeze(0);
            return spec.Normalize(chw.unsqueeze(0).contiguous());
        }
    }

    sealed class Similarity(string layer, Tensor reference, string name) : ITarget
    {
        public IReadOnlyCollection<string> RequiredLayers => [layer];
        public TargetSelection Select(TargetInput original) =>
            new(null, Enumerable.Repeat(Describe(), (int)original.Output.shape[0]).ToArray());
        public Tensor Scores(TargetInput input, TargetSelection selection)
        {
            using var scope = NewDisposeScope();
            var e = Embed(input.Layer(layer));
            return scope.MoveToOuter(nn.functional.cosine_similarity(e, reference.expand_as(e), 1));
        }
        public string Describe() => $"similarity to {name} at {layer}";
    }
}
