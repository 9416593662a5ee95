using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using static Loupe.Core.Report.Html;

namespace Loupe.Core.Report;

/// <summary>The report's methods × metrics table (<see cref="MethodsTable"/>) and its ranking plot: an inline SVG of
/// each method's mean rank over the metrics (1 = best on every metric), best first.</summary>
static class MethodsSection
{
    public static void Write(StringBuilder sb, JsonObject? table)
    {
        if (table is null) return;
        var methods = table["methods"]!.AsArray().Select(m => m!.ToString()).ToList();
        var metrics = table["metrics"]!.AsArray().Select(c => (Name: c!["name"]!.ToString(), Up: (bool)c["higherIsBetter"]!)).ToList();
        sb.Append("<h3>Methods × metrics</h3><p class=\"muted\">mean ± std over inputs; ↑ higher is better, ↓ lower is better; rank 1 is best.</p>");
        sb.Append("<table class=\"metrics methods\"><tr><th>method</th>");
        foreach (var (name, up) in metrics)
            sb.Append($"<th title=\"{(up ? "higher is better" : "lower is better")}\">{E(name)} {(up ? "↑" : "↓")}</th>");
        sb.Append("<th>mean rank</th></tr>");
        for (int i = 0; i < methods.Count; i++)
        {
            sb.Append($"<tr><td>{E(methods[i])}</td>");
            for (int j = 0; j < metrics.Count; j++)
                sb.Append("<td class=\"num\">").Append(E(MethodsTable.Cell(table["mean"]![i]![j], table["std"]![i]![j]))).Append("</td>");
            var rank = table["meanRank"]![i];
            sb.Append("<td class=\"num\">").Append(rank is null ? "—" : rank.GetValue<double>().ToString("F2", CultureInfo.InvariantCulture)).Append("</td></tr>");
        }
        sb.Append("</table>");
        var ranked = methods.Select((m, i) => (Method: m, Rank: table["meanRank"]![i]?.GetValue<double>())).Where(r => r.Rank is not null).OrderBy(r => r.Rank).ToList();
        if (ranked.Count == 0) return;
        double worst = Math.Max(1, methods.Count);
        int rowH = 22, labelW = 160, barW = 360, h = rowH * ranked.Count + 24;
        sb.Append($"<figure class=\"ranking\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{labelW + barW + 60}\" height=\"{h}\" role=\"img\" aria-label=\"mean rank per method\">");
        for (int k = 0; k < ranked.Count; k++)
        {
            var (m, r) = ranked[k];
            double w = barW * (worst - r!.Value + 1) / worst;   // longer bar = better (rank 1 is the full width)
            int y = k * rowH + 4;
            sb.Append($"<text x=\"{labelW - 6}\" y=\"{y + 15}\" text-anchor=\"end\" font-size=\"12\">{E(m)}</text>")
              .Append($"<rect x=\"{labelW}\" y=\"{y}\" width=\"{w.ToString("F1", CultureInfo.InvariantCulture)}\" height=\"{rowH - 6}\" fill=\"#4a7bd0\"/>")
              .Append($"<text x=\"{(labelW + w + 4).ToString("F1", CultureInfo.InvariantCulture)}\" y=\"{y + 15}\" font-size=\"12\">{r.Value.ToString("F2", CultureInfo.InvariantCulture)}</text>");
        }
        sb.Append($"<text x=\"{labelW}\" y=\"{h - 4}\" font-size=\"11\" fill=\"#666\">mean rank over {metrics.Count} metric(s); longer is better</text></svg>")
          .Append("<figcaption>Ranking of the methods</figcaption></figure>");
    }
}
