using System.Text;
using System.Text.RegularExpressions;
using Loupe.Abstractions;
using Loupe.Core;

namespace Loupe.Cli;

/// <summary>Verbs for pipeline and plugin authors: <c>loupe schema</c> and <c>loupe new plugin</c>.</summary>
internal static partial class AuthoringCommands
{
    /// <summary>Writes the JSON Schema of pipeline files for the registered plugins (stdout, or a file written atomically).</summary>
    public static int Schema(string? outFile)
    {
        using var registry = Commands.LoadRegistry();
        if (registry is null) return 2;
        var text = PipelineSchema.ToText(PipelineSchema.Generate(registry.Components));
        if (outFile is null) { Console.Out.Write(text); return 0; }
        AtomicFile.Write(outFile, Encoding.UTF8.GetBytes(text), overwrite: true);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(outFile)} ({registry.Components.Count} components)");
        return 0;
    }

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9]*(\\.[A-Za-z][A-Za-z0-9]*)*$")]
    private static partial Regex ValidName();

    /// <summary>Template files (embedded resources under templates/plugin/) and where each goes; __NAME__ etc. are replaced.</summary>
    static readonly (string Resource, string Path)[] PluginFiles =
    [
        ("Plugin.csproj.txt", "__NAME__/__NAME__.csproj"),
        ("Technique.txt", "__NAME__/__CLASS__.cs"),
        ("Tests.csproj.txt", "__NAME__.Tests/__NAME__.Tests.csproj"),
        ("Tests.txt", "__NAME__.Tests/__CLASS__Tests.cs"),
        ("example.yaml.txt", "example.yaml"),
    ];

    /// <summary>Creates a plugin project (one technique, its options record), its xunit project and an example pipeline.</summary>
    public static int NewPlugin(string name, string? outDir, string? feed)
    {
        if (!ValidName().IsMatch(name))
        {
            Console.Error.WriteLine($"error: plugin name '{name}' is not valid: use letters and digits, optionally dotted (e.g. SharpSaliency or Acme.SharpSaliency)");
            return 2;
        }
        var cls = char.ToUpperInvariant(name.Split('.')[^1][0]) + name.Split('.')[^1][1..];
        var id = Regex.Replace(cls, "(?<=[a-z0-9])([A-Z])", "-$1").ToLowerInvariant();
        var root = Path.GetFullPath(outDir ?? name);
        if (File.Exists(root) || Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any())
        {
            Console.Error.WriteLine($"error: {root} already exists and is not empty; choose another plugin name or --out folder");
            return 2;
        }
        if (feed is not null && !Directory.Exists(feed))
        {
            Console.Error.WriteLine($"error: --feed folder not found: {Path.GetFullPath(feed)} (create it with: dotnet pack core/Loupe.Abstractions -c Release -o <folder>)");
            return 2;
        }
        using (var registry = TryLoadRegistry())
            if (registry?.Components.FirstOrDefault(c => c.Id == id) is { } clash)
            {
                Console.Error.WriteLine($"error: the technique id '{id}' (from the name '{name}') is already registered by {clash.Source} as a {clash.Kind.ToString().ToLowerInvariant()}; choose another plugin name");
                return 2;
            }

        string Fill(string s) => s.Replace("__NAME__", name).Replace("__CLASS__", cls).Replace("__ID__", id)
            .Replace("__SDK_VERSION__", $"{LoupeContract.Version}.0.0")
            .Replace("__TORCHSHARP_VERSION__", typeof(TorchSharp.torch).Assembly.GetName().Version!.ToString(3));
        var files = PluginFiles.Select(f => (Path: Fill(f.Path), Text: Fill(Template(f.Resource)))).ToList();
        files.Add(($"{name}.slnx", Fill("<Solution>\n  <Project Path=\"__NAME__/__NAME__.csproj\" />\n  <Project Path=\"__NAME__.Tests/__NAME__.Tests.csproj\" />\n</Solution>\n")));
        if (feed is not null)
            files.Add(("NuGet.config", $"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<configuration>\n  <packageSources>\n    <!-- the packed Loupe SDK, beside the usual sources -->\n    <add key=\"loupe-sdk\" value=\"{System.Security.SecurityElement.Escape(Path.GetFullPath(feed))}\" />\n  </packageSources>\n</configuration>\n"));

        // Written into a temporary sibling folder and moved into place: no half-made plugin is left on failure.
        var parent = Path.GetDirectoryName(root)!;
        Directory.CreateDirectory(parent);
        var tmp = Path.Combine(parent, $".{Path.GetFileName(root)}.{Guid.NewGuid():N}.tmp");
        try
        {
            foreach (var (path, text) in files)
            {
                var full = Path.Combine(tmp, path);
                Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                File.WriteAllText(full, text);
            }
            if (Directory.Exists(root)) Directory.Delete(root); // empty (checked above)
            Directory.Move(tmp, root);
        }
        catch
        {
            try { Directory.Delete(tmp, true); } catch { /* best effort */ }
            throw;
        }
        Console.WriteLine($"created plugin '{name}' with the technique '{id}' in {root}:");
        foreach (var (path, _) in files) Console.WriteLine("  " + path);
        Console.WriteLine("next:");
        Console.WriteLine($"  cd {root} && dotnet test -c Release   (builds the plugin and runs its tests{(feed is null ? "; needs the Loupe.Abstractions package, see --feed" : "")})");
        Console.WriteLine($"  edit example.yaml (model, data), then: loupe run example.yaml");
        return 0;
    }

    static ComponentRegistry? TryLoadRegistry()
    {
        try { return ComponentRegistry.Load(Commands.PluginDirs); }
        catch (LoupeException) { return null; } // a broken plugin folder is reported by the verbs that use it
    }

    static string Template(string name)
    {
        using var s = typeof(AuthoringCommands).Assembly.GetManifestResourceStream("templates/plugin/" + name)
            ?? throw new InvalidOperationException($"template file {name} is not embedded in the CLI");
        return new StreamReader(s).ReadToEnd();
    }
}
