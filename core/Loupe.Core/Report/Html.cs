using System.Globalization;
using System.Net;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;

namespace Loupe.Core.Report;

/// <summary>Small HTML helpers shared by the run report and the comparison report: escaping, relative URLs, the page
/// shell with the inline stylesheet and script (embedded resources), and key/value tables.</summary>
internal static class Html
{
    public static string E(string? s) => WebUtility.HtmlEncode(s ?? "");

    /// <summary>A relative path as a URL (each segment escaped, forward slashes).</summary>
    public static string Url(string relativePath) =>
        string.Join('/', relativePath.Replace('\\', '/').Split('/').Select(s => s == ".." ? s : Uri.EscapeDataString(s)));

    public static string Resource(string name)
    {
        using var s = Assembly.GetExecutingAssembly().GetManifestResourceStream("Loupe.Core.Report." + name)
            ?? throw new InvalidOperationException($"resource {name} missing");
        return new StreamReader(s).ReadToEnd();
    }

    /// <summary>The whole page: inline CSS, the body, the data as inline JSON and (when given) the inline script.</summary>
    public static string Page(string title, string body, JsonNode? data, string? script)
    {
        var sb = new StringBuilder();
        sb.Append("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        sb.Append("<title>").Append(E(title)).Append("</title><style>").Append(Resource("report.css")).Append("</style></head>\n<body>\n");
        sb.Append(body);
        // System.Text.Json escapes <, > and & by default, so the JSON cannot close the script element.
        if (data is not null) sb.Append("\n<script type=\"application/json\" id=\"loupe-data\">").Append(data.ToJsonString()).Append("</script>");
        if (script is not null) sb.Append("\n<script>").Append(Resource(script)).Append("</script>");
        sb.Append("\n</body></html>\n");
        return sb.ToString();
    }

    public static string Num(double v) => double.IsFinite(v) ? v.ToString(Math.Abs(v) is >= 1e-3 and < 1e6 or 0 ? "0.####" : "0.###e+0", CultureInfo.InvariantCulture) : v.ToString(CultureInfo.InvariantCulture);

    public static string Seconds(JsonNode? ms) => ms is JsonValue v && v.TryGetValue<double>(out var d) ? (d / 1000).ToString("0.00", CultureInfo.InvariantCulture) + " s" : "—";

    /// <summary>A JSON value as short text (objects and arrays as compact JSON).</summary>
    public static string Text(JsonNode? n) => n switch { null => "—", JsonValue v => v.ToString(), _ => n.ToJsonString() };

    public static void KeyValues(StringBuilder sb, IEnumerable<(string Key, string HtmlValue)> rows)
    {
        sb.Append("<table class=\"kv\">");
        foreach (var (k, v) in rows) sb.Append("<tr><th>").Append(E(k)).Append("</th><td>").Append(v).Append("</td></tr>");
        sb.Append("</table>\n");
    }
}
