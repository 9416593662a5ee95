using System.Reflection;
using System.Security.Cryptography;
using Loupe.Abstractions;
using McMaster.NETCore.Plugins;
using Microsoft.Extensions.DependencyInjection;

namespace Loupe.Core;

/// <summary>A plugin assembly that was loaded.</summary>
public sealed record LoadedPlugin(string Name, string Path, string Version, int ContractVersion, string Sha256);

/// <summary>The one seam over McMaster.NETCore.Plugins: finds plugin assemblies in folders, refuses unsafe
/// ones, loads them with the contract types shared, and lets each registrar add its components.</summary>
public sealed class PluginHost
{
    static readonly Type[] SharedTypes =
    [
        typeof(IPluginRegistrar), typeof(TorchSharp.torch), typeof(IServiceCollection), typeof(Microsoft.Extensions.DependencyInjection.Extensions.ServiceCollectionDescriptorExtensions),
    ];
    static readonly string[] ForbiddenFiles = ["TorchSharp.dll", "libLibTorchSharp.so", "libtorch_cpu.so", "LibTorchSharp.dll", "libLibTorchSharp.dylib"];
    static readonly Dictionary<string, (LoadedPlugin Plugin, Assembly Assembly)> Loaded = new(StringComparer.Ordinal);
    static readonly object Gate = new();

    /// <summary>The folder of built-in plugins beside the host executable.</summary>
    public static string DefaultPluginDirectory => System.IO.Path.Combine(AppContext.BaseDirectory, "plugins");

    /// <summary>Main assemblies of the plugins in a folder: the folder itself and its immediate subfolders,
    /// each recognised by its <c>.deps.json</c> and <c>.runtimeconfig.json</c> next to the matching <c>.dll</c>.</summary>
    public static IReadOnlyList<string> Discover(string folder)
    {
        if (!Directory.Exists(folder)) throw new LoupeException($"plugin folder not found: {folder}");
        var dirs = new[] { folder }.Concat(Directory.GetDirectories(folder).OrderBy(d => d, StringComparer.Ordinal));
        var result = new List<string>();
        foreach (var dir in dirs)
            foreach (var deps in Directory.GetFiles(dir, "*.deps.json").OrderBy(d => d, StringComparer.Ordinal))
            {
                // A plugin is built with EnableDynamicLoading: it has a .deps.json and a .runtimeconfig.json;
                // plain libraries copied beside it (e.g. a contract assembly) have no runtimeconfig.
                var stem = deps[..^".deps.json".Length];
                if (File.Exists(stem + ".dll") && File.Exists(stem + ".runtimeconfig.json")) result.Add(stem + ".dll");
            }
        return result;
    }

    /// <summary>Checks a plugin folder before anything is loaded from it.</summary>
    public static void CheckFolder(string pluginDll)
    {
        var dir = System.IO.Path.GetDirectoryName(pluginDll)!;
        foreach (var f in ForbiddenFiles)
            if (File.Exists(System.IO.Path.Combine(dir, f)) || Directory.Exists(System.IO.Path.Combine(dir, "runtimes")) && Directory.GetFiles(System.IO.Path.Combine(dir, "runtimes"), f, SearchOption.AllDirectories).Length > 0)
                throw new LoupeException(
                    $"plugin '{System.IO.Path.GetFileNameWithoutExtension(pluginDll)}' in {dir} carries its own {f}; a second copy of TorchSharp/libtorch would abort the process. " +
                    "Reference TorchSharp with ExcludeAssets=\"runtime;native\" (see docs/plugin-authors.md) and rebuild the plugin.");
    }

    /// <summary>Loads every plugin in <paramref name="folders"/> and registers its components into <paramref name="services"/>.</summary>
    public static IReadOnlyList<LoadedPlugin> LoadInto(IServiceCollection services, IEnumerable<string> folders)
    {
        var plugins = new List<LoadedPlugin>();
        foreach (var folder in folders)
            foreach (var dll in Discover(folder))
                plugins.Add(LoadOne(services, dll));
        return plugins;
    }

    static LoadedPlugin LoadOne(IServiceCollection services, string dll)
    {
        var full = System.IO.Path.GetFullPath(dll);
        CheckFolder(full);
        (LoadedPlugin Plugin, Assembly Assembly) entry;
        lock (Gate)
        {
            if (!Loaded.TryGetValue(full, out entry))
            {
                Assembly asm;
                try
                {
                    var loader = PluginLoader.CreateFromAssemblyFile(full, SharedTypes, cfg => cfg.PreferSharedTypes = true);
                    asm = loader.LoadDefaultAssembly();
                }
                catch (Exception e) { throw new LoupeException($"plugin {full} could not be loaded: {e.Message}", e); }
                var attr = asm.GetCustomAttribute<LoupePluginAttribute>()
                    ?? throw new LoupeException($"{full} is not a Loupe plugin: it lacks [assembly: LoupePlugin({LoupeContract.Version})]");
                if (attr.ContractVersion != LoupeContract.Version)
                    throw new LoupeException($"plugin {full} was built for Loupe contract version {attr.ContractVersion}, but this host supports version {LoupeContract.Version}; rebuild it against Loupe.Abstractions {LoupeContract.Version}.x");
                var plugin = new LoadedPlugin(asm.GetName().Name!, full, asm.GetName().Version?.ToString() ?? "?", attr.ContractVersion, Sha256File(full));
                entry = (plugin, asm);
                Loaded[full] = entry;
            }
        }
        Type[] types;
        try { types = entry.Assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { throw new LoupeException($"plugin {full} has types that cannot load: {e.LoaderExceptions.FirstOrDefault()?.Message}", e); }
        var registrars = types.Where(t => typeof(IPluginRegistrar).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false }).ToList();
        if (registrars.Count == 0) throw new LoupeException($"plugin {full} has no IPluginRegistrar implementation");
        foreach (var r in registrars)
        {
            var before = services.Count;
            try { ((IPluginRegistrar)Activator.CreateInstance(r)!).Register(services); }
            catch (Exception e) { throw new LoupeException($"plugin {entry.Plugin.Name}: registrar {r.Name} failed: {e.Message}", e); }
            for (int i = before; i < services.Count; i++)
                if (services[i].ImplementationInstance is ComponentDescriptor d)
                    services[i] = ServiceDescriptor.Singleton(d with { Source = entry.Plugin.Name });
        }
        return entry.Plugin;
    }

    /// <summary>SHA-256 (hex) of a file.</summary>
    public static string Sha256File(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s)).ToLowerInvariant();
    }
}

/// <summary>The registered components, by kind and id.</summary>
public sealed class ComponentRegistry : IDisposable
{
    readonly ServiceProvider _provider;

    ComponentRegistry(ServiceProvider provider, IReadOnlyList<LoadedPlugin> plugins)
    {
        _provider = provider;
        Plugins = plugins;
        Components = provider.GetServices<ComponentDescriptor>().ToList();
        var dup = Components.GroupBy(c => (c.Kind, c.Id)).FirstOrDefault(g => g.Count() > 1);
        if (dup != null)
            throw new LoupeException($"{dup.Key.Kind.ToString().ToLowerInvariant()} id '{dup.Key.Id}' is registered twice (by {string.Join(" and ", dup.Select(d => d.Source))})");
    }

    /// <summary>Loaded plugins.</summary>
    public IReadOnlyList<LoadedPlugin> Plugins { get; }
    /// <summary>All registered components.</summary>
    public IReadOnlyList<ComponentDescriptor> Components { get; }

    /// <summary>Loads plugins from folders and builds the registry.</summary>
    public static ComponentRegistry Load(IEnumerable<string> folders, IEnumerable<IPluginRegistrar>? inProcess = null)
    {
        var services = new ServiceCollection();
        var plugins = PluginHost.LoadInto(services, folders);
        foreach (var r in inProcess ?? [])
        {
            var before = services.Count;
            r.Register(services);
            for (int i = before; i < services.Count; i++)
                if (services[i].ImplementationInstance is ComponentDescriptor d)
                    services[i] = ServiceDescriptor.Singleton(d with { Source = r.GetType().Assembly.GetName().Name + " (in-process)" });
        }
        return new ComponentRegistry(services.BuildServiceProvider(), plugins);
    }

    /// <summary>The descriptor for (kind, id), or null.</summary>
    public ComponentDescriptor? Find(ComponentKind kind, string id) => Components.FirstOrDefault(c => c.Kind == kind && c.Id == id);

    /// <summary>All ids of a kind.</summary>
    public IEnumerable<string> Ids(ComponentKind kind) => Components.Where(c => c.Kind == kind).Select(c => c.Id).OrderBy(i => i);

    /// <summary>Creates the component registered as (kind, id).</summary>
    public T Create<T>(string id) where T : class => _provider.GetRequiredKeyedService<T>(id);

    /// <summary>Error message for an unknown id, with a suggestion and the registered ids.</summary>
    public string Unknown(ComponentKind kind, string id)
    {
        var ids = Ids(kind).ToList();
        var k = kind.ToString().ToLowerInvariant();
        return $"unknown {k} '{id}'{Suggest.DidYouMean(id, ids)}; registered {k} ids: {(ids.Count == 0 ? "(none)" : string.Join(", ", ids))}";
    }

    /// <inheritdoc/>
    public void Dispose() => _provider.Dispose();
}
