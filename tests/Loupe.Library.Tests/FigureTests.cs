using Loupe.Abstractions;
using Loupe.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Loupe.Library.Tests;

/// <summary>A technique that hands over one figure undrawn and counts how often it is drawn.</summary>
public sealed class CountedFigure : Analysis<NoOptions>
{
    /// <summary>Drawings so far (every instance).</summary>
    public static int Drawn;

    public override AnalysisRequirements Requirements => new(ModelCapabilities.Forward);

    public override void Run(NoOptions options, IAnalysisContext ctx)
    {
        var pixels = new byte[3 * 2 * 3];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = (byte)(10 * i);
        ctx.Output.Metric("answer", 42);
        ctx.Output.Figure("plot", null, () => { Interlocked.Increment(ref Drawn); return new RgbImage(3, 2, pixels); });
    }
}

public sealed class CountedFigureRegistrar : IPluginRegistrar
{
    public void Register(IServiceCollection services) =>
        services.AddLoupeAnalysis<CountedFigure>("counted-figure", "hands over one figure undrawn");
}

/// <summary><see cref="IArtifactSink.Figure"/>: the library draws a figure the first time it is looked at, once; a
/// pipeline run draws it at once and writes it as any picture.</summary>
[Collection("library")]
public class FigureTests
{
    static string Fixture(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", name);

    [Fact]
    public void The_library_draws_a_figure_when_it_is_read_and_a_run_writes_it()
    {
        using (var model = LoupeModel.Load("torchvision", new { architecture = "fashion-cnn", weights = Fixture("fashion_cnn_seed0.safetensors") },
            new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins], Registrars = [new CountedFigureRegistrar()], Threads = 1 }))
        {
            int before = Volatile.Read(ref CountedFigure.Drawn);
            var e = model.Explain("counted-figure", Npy.Read(Fixture("fashion_input.npy")));
            Assert.Equal(42, e.Metrics["answer"]);
            var plot = e.Artifacts.Single(a => a.Name == "plot");
            Assert.Equal(ArtifactKind.Display, plot.Kind);
            Assert.Equal(before, Volatile.Read(ref CountedFigure.Drawn));          // not drawn by the run
            Assert.Equal(30, plot.Image!.Pixels[3]);
            Assert.Same(plot.Image, plot.Image);                                    // drawn once
            Assert.Equal(before + 1, Volatile.Read(ref CountedFigure.Drawn));
        }

        var pipeline = FashionPipelines.Write("loupe-figure", "figure", "  - { id: fig, uses: counted-figure }", limit: 4, batchSize: 4);
        var run = Pipelines.Run(pipeline, new PipelineOptions
        {
            PluginDirectories = [RepoPaths.BuiltInPlugins], Registrars = [new CountedFigureRegistrar()],
            OutDir = Path.Combine(Path.GetDirectoryName(pipeline)!, "out"),
        });
        Assert.True(run.ExitCode == 0, string.Join("\n", run.Errors));
        using var png = SixLabors.ImageSharp.Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(Path.Combine(run.OutDir!, "fig", "plot.png"));
        Assert.Equal((3, 2), (png.Width, png.Height));
        Assert.Equal(new SixLabors.ImageSharp.PixelFormats.Rgb24(30, 40, 50), png[1, 0]);
    }
}
