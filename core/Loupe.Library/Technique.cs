using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe;

/// <summary>A registered technique of a <see cref="LoupeModel"/>: its id, what it does, its options, and calls.</summary>
public sealed class Technique
{
    readonly LoupeModel _model;
    readonly ComponentDescriptor _descriptor;

    internal Technique(LoupeModel model, ComponentDescriptor descriptor, AnalysisRequirements requirements)
    {
        _model = model; _descriptor = descriptor; Requirements = requirements;
    }

    /// <summary>What it needs: model capabilities, whether it explains a target (attribution, CAM and perturbation
    /// techniques do), whether it reads the data.</summary>
    public AnalysisRequirements Requirements { get; }

    /// <summary>The id (a step's <c>uses:</c>).</summary>
    public string Id => _descriptor.Id;
    /// <summary>One line on what it shows.</summary>
    public string Description => _descriptor.Description;
    /// <summary>Its options, as <c>loupe describe</c> lists them.</summary>
    public IReadOnlyList<OptionInfo> Options => Inspector.Options(_descriptor.OptionsType, _descriptor.ImplementationType);
    /// <summary>The type of its options record (from the plugin's assembly).</summary>
    public Type OptionsType => _descriptor.OptionsType;

    /// <summary>Explains one image (see <see cref="LoupeModel.Explain(string, ImageInput, object?, object?, CancellationToken)"/>).</summary>
    public Explanation Explain(ImageInput image, object? options = null, object? target = null, CancellationToken cancellation = default) =>
        _model.Explain(Id, image, options, target, cancellation);

    /// <summary>Explains several images.</summary>
    public Explanation Explain(IReadOnlyList<ImageInput> images, object? options = null, object? target = null, CancellationToken cancellation = default) =>
        _model.Explain(Id, images, options, target, cancellation);

    /// <summary>Explains a preprocessed N×C×H×W batch.</summary>
    public Explanation Explain(NdArray input, object? options = null, object? target = null, CancellationToken cancellation = default) =>
        _model.Explain(Id, input, options, target, cancellation);

    /// <inheritdoc/>
    public override string ToString() => $"{Id}: {Description}";
}
