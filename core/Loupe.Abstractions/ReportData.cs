namespace Loupe.Abstractions;

/// <summary>A 2-D embedding of the run's inputs (t-SNE, PCA, UMAP, ...) for the HTML report's interactive scatter:
/// write it with <c>ctx.Output.Json(Points2D.ArtifactName, points)</c>. The report draws every point coloured by its
/// label; hovering shows the input's thumbnail, label and id, clicking opens the image and its per-input results.
/// The host knows this record, not the technique that wrote it.</summary>
/// <param name="Title">Plot title.</param>
/// <param name="XLabel">Horizontal axis label.</param>
/// <param name="YLabel">Vertical axis label.</param>
/// <param name="Ids">Input ids (the data source's ids), one per point.</param>
/// <param name="X">Horizontal coordinates, one per point.</param>
/// <param name="Y">Vertical coordinates, one per point.</param>
/// <param name="Labels">Ground-truth label indices (into the model's labels) when known.</param>
public sealed record Points2D(string Title, string XLabel, string YLabel, string[] Ids, float[] X, float[] Y, long[]? Labels)
{
    /// <summary>The artifact name the report looks for (<c>&lt;step&gt;/points2d.json</c>).</summary>
    public const string ArtifactName = "points2d";

    /// <summary>Checks that the arrays agree (throws <see cref="ArgumentException"/>).</summary>
    public Points2D Validated()
    {
        if (X.Length != Ids.Length || Y.Length != Ids.Length || Labels is not null && Labels.Length != Ids.Length)
            throw new ArgumentException($"points2d: {Ids.Length} ids but {X.Length} x, {Y.Length} y and {Labels?.Length ?? Ids.Length} labels");
        return this;
    }
}
