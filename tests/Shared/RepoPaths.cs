using System.Reflection;

namespace Loupe.Testing;

/// <summary>Paths every test project needs (compiled into each one from tests/Shared, see tests/Directory.Build.props).</summary>
public static class RepoPaths
{
    /// <summary>The repository root (the folder of Framework.sln).</summary>
    public static string Root { get; } = FindRoot();

    static string FindRoot()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Framework.sln"))) dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("Framework.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Build configuration of the running test assembly (Debug/Release).</summary>
    public static string Configuration { get; } =
        typeof(RepoPaths).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";

    /// <summary>The CLI's output folder.</summary>
    public static string CliDirectory => Path.Combine(Root, "hosts", "Loupe.Cli", "bin", Configuration, "net10.0");

    /// <summary>The built-in plugins folder beside the CLI.</summary>
    public static string BuiltInPlugins => Path.Combine(CliDirectory, "plugins");

    /// <summary>A fresh temporary folder.</summary>
    public static string TempDir(string prefix = "loupe-test")
    {
        var d = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>A path as YAML-friendly text (forward slashes).</summary>
    public static string Yaml(string path) => path.Replace("\\", "/");
}
