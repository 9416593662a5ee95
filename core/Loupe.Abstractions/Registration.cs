using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;

namespace Loupe.Abstractions;

/// <summary>Registration helpers for plugin registrars.</summary>
public static partial class LoupeServiceCollectionExtensions
{
    /// <summary>Registers a model adapter under <paramref name="id"/>.</summary>
    public static IServiceCollection AddLoupeModel<T>(this IServiceCollection services, string id, string description)
        where T : class, IModelAdapter => services.AddLoupeComponent<IModelAdapter, T>(id, ComponentKind.Model, description);

    /// <summary>Registers a data source under <paramref name="id"/>.</summary>
    public static IServiceCollection AddLoupeData<T>(this IServiceCollection services, string id, string description)
        where T : class, IDataAdapter => services.AddLoupeComponent<IDataAdapter, T>(id, ComponentKind.Data, description);

    /// <summary>Registers a target under <paramref name="id"/>.</summary>
    public static IServiceCollection AddLoupeTarget<T>(this IServiceCollection services, string id, string description)
        where T : class, ITargetFactory => services.AddLoupeComponent<ITargetFactory, T>(id, ComponentKind.Target, description);

    /// <summary>Registers an analysis (technique) under <paramref name="id"/>.</summary>
    public static IServiceCollection AddLoupeAnalysis<T>(this IServiceCollection services, string id, string description)
        where T : class, IAnalysis => services.AddLoupeComponent<IAnalysis, T>(id, ComponentKind.Analysis, description);

    static IServiceCollection AddLoupeComponent<TService, TImpl>(this IServiceCollection services, string id, ComponentKind kind, string description)
        where TService : class where TImpl : class, TService
    {
        if (!KebabId().IsMatch(id))
            throw new ArgumentException($"Component id '{id}' must be kebab-case (lower-case letters, digits and '-').", nameof(id));
        services.AddKeyedTransient<TService, TImpl>(id);
        services.AddSingleton(new ComponentDescriptor(id, kind, typeof(TImpl), OptionsTypeOf(typeof(TImpl)), description));
        return services;
    }

    /// <summary>The options record of a component type (from <see cref="IHasOptions{TOptions}"/>), or <see cref="NoOptions"/>.</summary>
    public static Type OptionsTypeOf(Type implementation) =>
        implementation.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IHasOptions<>))
            ?.GetGenericArguments()[0] ?? typeof(NoOptions);

    [GeneratedRegex("^[a-z0-9]+(-[a-z0-9]+)*$")]
    private static partial Regex KebabId();
}

/// <summary>Typed marker: the component binds <typeparamref name="TOptions"/> from YAML.</summary>
public interface IHasOptions<TOptions> : IHasOptions where TOptions : class, new() { }

/// <summary>Options record of components that take none.</summary>
public sealed record NoOptions;
