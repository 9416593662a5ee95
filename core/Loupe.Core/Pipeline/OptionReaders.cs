using System.Reflection;
using Loupe.Abstractions;

namespace Loupe.Core;

/// <summary>Which options of a shared options record a component reads (<see cref="ReadsOptionsAttribute"/>): what
/// the binder refuses, and what <c>loupe describe</c> and the schema list.</summary>
public static class OptionReaders
{
    /// <summary>The options of <paramref name="d"/>'s record it reads.</summary>
    public static IReadOnlySet<string> Read(ComponentDescriptor d) => ReadsOptionsAttribute.Of(d.ImplementationType, d.OptionsType);

    /// <summary>Null when <paramref name="d"/> reads every option of its record; else, for a property it does not read,
    /// the tail of the error (<c>applies to region-perturbation and selectivity, not to road</c>: the components of
    /// <paramref name="all"/> of the same kind and record that read it) and null for one it reads.</summary>
    public static Func<PropertyInfo, string?>? NotRead(ComponentDescriptor d, IEnumerable<ComponentDescriptor> all)
    {
        var read = Read(d);
        if (OptionsBinder.Properties(d.OptionsType).All(p => read.Contains(p.Name))) return null;
        var family = all.Where(c => c.Kind == d.Kind && c.OptionsType == d.OptionsType && c.Id != d.Id).Select(c => (c.Id, Read: Read(c))).ToList();
        return p =>
        {
            if (read.Contains(p.Name)) return null;
            var readers = family.Where(c => c.Read.Contains(p.Name)).Select(c => c.Id).Order(StringComparer.Ordinal).ToList();
            return readers.Count == 0 ? $"is not read by {d.Id}"
                : $"applies to {(readers.Count == 1 ? readers[0] : string.Join(", ", readers.Take(readers.Count - 1)) + " and " + readers[^1])}, not to {d.Id}";
        };
    }
}
