namespace Loupe.Abstractions;

/// <summary>The PyTorch module scopes in a node name of a graph exported by <c>torch.onnx.export</c>
/// (<c>/layer4/layer4.1/conv1/Conv</c>): the module paths the node runs inside, outermost first (<c>layer4</c>,
/// <c>layer4.1</c>, <c>layer4.1.conv1</c>). Children of a Sequential or ModuleList appear qualified by their parent's
/// own name (<c>layer4.1</c> under <c>layer4</c>), others by their name alone. A backend that names graph nodes this
/// way lets a technique match them to the module paths a user writes.</summary>
public static class ModuleScopes
{
    /// <summary>The module paths of a node name, outermost first; none for a name without a leading '/'.</summary>
    public static IEnumerable<string> Of(string nodeName)
    {
        if (!nodeName.StartsWith('/')) yield break;
        var parts = nodeName.Split('/', StringSplitOptions.RemoveEmptyEntries);
        string path = "", previous = "";
        for (int i = 0; i < parts.Length - 1; i++)   // the last part is the node's own name (Relu, Conv_3, ...)
        {
            var c = parts[i];
            path = path.Length == 0 ? c
                : c.StartsWith(previous + ".", StringComparison.Ordinal) ? path[..^previous.Length] + c
                : path + "." + c;
            previous = c;
            yield return path;
        }
    }

    /// <summary>The innermost module path of a node name (the module the node belongs to), or null.</summary>
    public static string? Innermost(string nodeName) => Of(nodeName).LastOrDefault();
}
