namespace Loupe.Abstractions;

/// <summary>Version of the plugin contract. A plugin built against another major version is refused.</summary>
public static class LoupeContract
{
    /// <summary>The contract version this host implements.</summary>
    public const int Version = 2;
}

/// <summary>Marks an assembly as a Loupe plugin and records the contract version it was built against.</summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class LoupePluginAttribute(int contractVersion) : Attribute
{
    /// <summary>Contract version the plugin was compiled against.</summary>
    public int ContractVersion { get; } = contractVersion;
}

/// <summary>Kinds of component a plugin can register.</summary>
public enum ComponentKind { Model, Data, Target, Analysis }

/// <summary>What the host knows about one registered component.</summary>
/// <param name="Id">Kebab-case id used by <c>uses:</c> in pipelines.</param>
/// <param name="Kind">Component kind.</param>
/// <param name="ImplementationType">Concrete class.</param>
/// <param name="OptionsType">Record bound from YAML <c>with:</c>.</param>
/// <param name="Description">One line for <c>loupe plugins</c> / <c>loupe describe</c>.</param>
public sealed record ComponentDescriptor(string Id, ComponentKind Kind, Type ImplementationType, Type OptionsType, string Description)
{
    /// <summary>Plugin assembly that registered it (filled by the host).</summary>
    public string? Source { get; init; }
}

/// <summary>Entry point of a plugin assembly: registers its components.</summary>
public interface IPluginRegistrar
{
    /// <summary>Adds this plugin's components to the service collection (use the <c>AddLoupe*</c> extensions).</summary>
    void Register(Microsoft.Extensions.DependencyInjection.IServiceCollection services);
}

/// <summary>Implemented by components whose options are bound from YAML.</summary>
public interface IHasOptions
{
    /// <summary>The options record type.</summary>
    Type OptionsType { get; }
}
