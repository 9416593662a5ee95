using System.Reflection;
using System.Reflection.Metadata;
using System.Security.Cryptography;
using Loupe.Abstractions;
using McMaster.NETCore.Plugins;
using Microsoft.Extensions.DependencyInjection;

namespace Loupe.Core;

/// <summary>A plugin assembly that was loaded.</summary>
public sealed record LoadedPlugin(string Name, string Path, string Version, int ContractVersion, string Sha256);

/// <summary>A pinned plugin whose hash does not match, or a pin that does not name exactly one plugin.</summary>
public sealed class PluginPinException(PluginSource source, string message) : LoupeException(message)
{
    /// <summary>The pipeline entry.</summary>
    public PluginSource Entry { get; } = source;
}

/// <summary>What <c>loupe plugins --verify</c> reports for one plugin assembly, read from its metadata without running it.</summary>
public sealed record PluginCheck(string Path, string? Name, string? Version, int? ContractVersion, string Sha256, string? PinnedSha256, string? Error)
{
    /// <summary>True when nothing is wrong.</summary>
    public bool Ok => Error is null;
}

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
        if (folder.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) && File.Exists(folder)) return [folder];
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
    public static IReadOnlyList<LoadedPlugin> LoadInto(IServiceCollection services, IEnumerable<PluginSource> sources)
    {
        // Every source is resolved and every pin checked from the files alone before any plugin code loads, so an
        // unpinned copy reached through an earlier folder (or LOUPE_PLUGIN_PATH) cannot run first.
        var entries = new List<(string Dll, PluginSource Source)>();
        foreach (var source in Merge(sources))
            foreach (var dll in Resolve(source).Select(d => System.IO.Path.GetFullPath(d)))
            {
                int at = entries.FindIndex(e => e.Dll == dll);
                if (at < 0) entries.Add((dll, source));
                else if (source.Sha256 is not null) entries[at] = (dll, source); // the same file, reached twice: the pin applies
            }
        var pinned = new Dictionary<string, (string Dll, PluginSource Pin)>(StringComparer.OrdinalIgnoreCase);
        foreach (var (dll, pin) in entries.Where(e => e.Source.Sha256 is not null))
        {
            CheckFolder(dll);
            CheckPin(pin, dll, Sha256File(dll));
            pinned[AssemblyNameOf(dll)] = (dll, pin);
        }
        foreach (var (dll, _) in entries.Where(e => e.Source.Sha256 is null && pinned.Count > 0))
            if (pinned.TryGetValue(AssemblyNameOf(dll), out var p))
                throw new PluginPinException(p.Pin, $"plugin {dll} is an unpinned copy of the pinned plugin '{AssemblyNameOf(dll)}' ({p.Dll}); " +
                    "with a pin present only the pinned file may load: remove the other folder from the pipeline's plugins or LOUPE_PLUGIN_PATH, or pin that file");
        return entries.Select(e => LoadOne(services, e.Dll, e.Source.Sha256 is null ? null : e.Source)).ToList();
    }

    /// <summary>The assembly name in a plugin's metadata (its file name when the metadata cannot be read).</summary>
    static string AssemblyNameOf(string dll)
    {
        try { return ReadMetadata(dll).Name; }
        catch (Exception e) when (e is BadImageFormatException or InvalidOperationException or IOException) { return System.IO.Path.GetFileNameWithoutExtension(dll); }
    }

    /// <summary>One source per path (a pinned one wins), in first-seen order.</summary>
    static IEnumerable<PluginSource> Merge(IEnumerable<PluginSource> sources) =>
        sources.Select(s => s with { Path = System.IO.Path.GetFullPath(s.Path) }).GroupBy(s => s.Path)
            .Select(g => g.FirstOrDefault(s => s.Sha256 is not null) ?? g.First());

    /// <summary>The plugin assemblies of a source; a pinned source must name exactly one.</summary>
    static IReadOnlyList<string> Resolve(PluginSource source)
    {
        var dlls = Discover(source.Path);
        if (source.Sha256 is not null && dlls.Count != 1)
            throw new PluginPinException(source, $"plugin pin for {source.Path}: a pinned entry must name exactly one plugin, but it holds {dlls.Count}" +
                (dlls.Count > 1 ? $" ({string.Join(", ", dlls.Select(System.IO.Path.GetFileName))}); pin each by its .dll path" : ""));
        return dlls;
    }

    /// <summary>Refuses a plugin whose SHA-256 differs from its pin, before any of its code is loaded.</summary>
    static void CheckPin(PluginSource? pin, string dll, string actual)
    {
        if (pin?.Sha256 is { } expected && !string.Equals(expected, actual, StringComparison.OrdinalIgnoreCase))
            throw new PluginPinException(pin, $"plugin {dll}: SHA-256 mismatch: the pipeline pins {expected}, but the file's is {actual}; refusing to load it " +
                "(if the plugin was updated on purpose, check where it came from and update the pin; 'loupe plugins --verify' prints the hashes)");
    }

    /// <summary>Checks the plugins of <paramref name="sources"/> from their files only (hash, assembly metadata, pins,
    /// forbidden runtime copies): no plugin code is loaded or run.</summary>
    public static IReadOnlyList<PluginCheck> Verify(IEnumerable<PluginSource> sources)
    {
        var checks = new List<PluginCheck>();
        foreach (var source in Merge(sources))
        {
            IReadOnlyList<string> dlls;
            try { dlls = Resolve(source); }
            catch (LoupeException e) { checks.Add(new PluginCheck(source.Path, null, null, null, "", source.Sha256, e.Message)); continue; }
            foreach (var dll in dlls)
            {
                var sha = Sha256File(dll);
                string? name = null, version = null, error = null; int? contract = null;
                try
                {
                    (name, version, contract) = ReadMetadata(dll);
                    CheckFolder(dll);
                    CheckPin(source.Sha256 is null ? null : source, dll, sha);
                    if (contract is null) error = $"not a Loupe plugin: it lacks [assembly: LoupePlugin({LoupeContract.Version})]";
                    else if (contract != LoupeContract.Version) error = $"built for contract version {contract}, but this host supports version {LoupeContract.Version}";
                }
                catch (Exception e) when (e is LoupeException or BadImageFormatException or InvalidOperationException or IOException) { error ??= e.Message; }
                checks.Add(new PluginCheck(dll, name, version, contract, sha, source.Sha256, error));
            }
        }
        return checks;
    }

    /// <summary>Name, version and <c>[assembly: LoupePlugin(n)]</c> of an assembly, from its metadata.</summary>
    static (string Name, string Version, int? Contract) ReadMetadata(string dll)
    {
        using var stream = File.OpenRead(dll);
        using var pe = new System.Reflection.PortableExecutable.PEReader(stream);
        if (!pe.HasMetadata) throw new BadImageFormatException($"{dll} is not a .NET assembly");
        var md = pe.GetMetadataReader();
        var def = md.GetAssemblyDefinition();
        int? contract = null;
        foreach (var h in def.GetCustomAttributes())
        {
            var a = md.GetCustomAttribute(h);
            if (a.Constructor.Kind != HandleKind.MemberReference) continue;
            var ctor = md.GetMemberReference((MemberReferenceHandle)a.Constructor);
            if (ctor.Parent.Kind != HandleKind.TypeReference) continue;
            var type = md.GetTypeReference((TypeReferenceHandle)ctor.Parent);
            if (md.GetString(type.Name) != nameof(LoupePluginAttribute) || md.GetString(type.Namespace) != typeof(LoupePluginAttribute).Namespace) continue;
            var blob = md.GetBlobReader(a.Value);
            if (blob.Length >= 6 && blob.ReadUInt16() == 1) contract = blob.ReadInt32(); // prolog 0x0001, then the int argument
        }
        return (md.GetString(def.Name), def.Version.ToString(), contract);
    }

    static LoadedPlugin LoadOne(IServiceCollection services, string dll, PluginSource? pin)
    {
        var full = System.IO.Path.GetFullPath(dll);
        CheckFolder(full);
        (LoadedPlugin Plugin, Assembly Assembly) entry;
        lock (Gate)
        {
            if (pin is not null) CheckPin(pin, full, Sha256File(full));
            if (Loaded.TryGetValue(full, out entry)) CheckPin(pin, full, entry.Plugin.Sha256); // the copy already loaded must match too
            else
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
    public static ComponentRegistry Load(IEnumerable<string> folders, IEnumerable<IPluginRegistrar>? inProcess = null) =>
        Load(folders.Select(f => new PluginSource(f)), inProcess);

    /// <summary>Loads plugins from sources (folders or plugin files, possibly pinned) and builds the registry.</summary>
    public static ComponentRegistry Load(IEnumerable<PluginSource> sources, IEnumerable<IPluginRegistrar>? inProcess = null)
    {
        var services = new ServiceCollection();
        var plugins = PluginHost.LoadInto(services, sources);
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

    /// <summary>Why the component <paramref name="d"/> does not read an option of its record, for
    /// <see cref="OptionsBinder.Bind(Type, YamlDotNet.RepresentationModel.YamlNode?, string, string, string, List{PipelineError}, YamlDotNet.Core.Mark, Func{System.Reflection.PropertyInfo, string?}?, List{PipelineError}?)"/>
    /// (null when it reads them all): <see cref="OptionReaders.NotRead"/> over this registry's components.</summary>
    public Func<System.Reflection.PropertyInfo, string?>? NotRead(ComponentDescriptor d) => OptionReaders.NotRead(d, Components);

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
