using System.Text.RegularExpressions;
using Loupe.Testing;
using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Commands;
using Microsoft.DotNet.Interactive.CSharp;
using Microsoft.DotNet.Interactive.Documents;
using Microsoft.DotNet.Interactive.Documents.Jupyter;
using Microsoft.DotNet.Interactive.Events;

namespace Loupe.Library.Tests;

/// <summary>samples/Library/loupe.ipynb, cell by cell, in a C# kernel as Polyglot Notebooks runs it (working folder: the
/// notebook's). Same collection as <see cref="LibraryTests"/>: the notebook changes the process's working folder.</summary>
[Collection("library")]
public class NotebookTests
{
    [Fact]
    public async Task NotebookCellsRunAndShowMapsInline()
    {
        var folder = Path.Combine(RepoPaths.Root, "samples", "Library");
        var doc = Notebook.Parse(File.ReadAllText(Path.Combine(folder, "loupe.ipynb")), new KernelInfoCollection { new Microsoft.DotNet.Interactive.Documents.KernelInfo("csharp") });
        var cells = doc.Elements.Where(e => e.KernelName == "csharp").ToList();
        Assert.True(cells.Count >= 5);
        var html = new List<string>();
        using var kernel = new CSharpKernel();
        var previous = Environment.CurrentDirectory;
        Environment.CurrentDirectory = folder;
        try
        {
            foreach (var cell in cells)
            {
                var result = await kernel.SendAsync(new SubmitCode(cell.Contents));
                var failed = result.Events.OfType<CommandFailed>().FirstOrDefault();
                Assert.True(failed is null, $"cell failed:\n{cell.Contents}\n{failed?.Message}");
                html.AddRange(result.Events.OfType<DisplayEvent>().SelectMany(d => d.FormattedValues).Where(f => f.MimeType == "text/html").Select(f => f.Value));
            }
        }
        finally { Environment.CurrentDirectory = previous; }

        var pngs = html.SelectMany(h => Regex.Matches(h, "data:image/png;base64,([A-Za-z0-9+/=]+)").Select(m => Convert.FromBase64String(m.Groups[1].Value))).ToList();
        Assert.True(pngs.Count >= 5, $"{pngs.Count} inline pictures"); // Grad-CAM overlay, its map, three techniques
        Assert.Contains(html, h => h.Contains("sneaker"));                // the predictions table
        Assert.Contains(html, h => h.Contains("deletion_auc"));           // the metric per method (Evaluate)
        Assert.Contains(html, h => h.Contains("float32 (1×28×28)") || h.Contains("float32 (28×28)"));
        // The inline Grad-CAM picture is the library's own.
        using var model = LoupeModel.Load("torchvision",
            new { architecture = "fashion-cnn", weights = Path.Combine(RepoPaths.Root, "samples/models/fashion-cnn/fashion-cnn.safetensors") },
            new LoupeSettings { PluginDirectories = [RepoPaths.BuiltInPlugins] });
        var direct = model.Explain("grad-cam", Path.Combine(RepoPaths.Root, "samples/images/fashion/00009-sneaker.png"), new { layer = "relu3" }).Overlay().ToPng();
        Assert.Contains(pngs, p => p.AsSpan().SequenceEqual(direct));
    }
}
