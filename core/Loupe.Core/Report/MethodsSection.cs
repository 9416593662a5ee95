using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using static Loupe.Core.Report.Html;

namespace Loupe.Core.Report;

/// <summary>The report's methods × metrics table (<see cref="MethodsTable"/>) and its ranking plots: an inline SVG of
/// each method's mean rank over the metrics (1 = best on every metric), best first, and a grid of each method's rank
/// on each metric.</summary>
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
        if (table["rank"] is JsonArray perMetric) RankGrid(sb, methods, metrics, perMetric);
    }

    /// <summary>The rank of every method on every metric (rows: metrics with their direction; columns: methods), a
    /// circle per cell coloured from green (rank 1) to red (last).</summary>
    static void RankGrid(StringBuilder sb, List<string> methods, List<(string Name, bool Up)> metrics, JsonArray rank)
    {
        int labelW = 230, colW = Math.Max(70, 8 * methods.Max(m => Math.Min(m.Length, 24))), rowH = 20, top = 28;
        int w = labelW + colW * methods.Count + 10, h = top + rowH * metrics.Count + 8;
        double worst = Math.Max(1, methods.Count);
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
        sb.Append($"<figure class=\"ranking\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"rank of each method per metric\">");
        for (int i = 0; i < methods.Count; i++)
            sb.Append($"<text x=\"{F(labelW + colW * (i + 0.5))}\" y=\"18\" text-anchor=\"middle\" font-size=\"12\">{E(methods[i])}</text>");
        for (int j = 0; j < metrics.Count; j++)
        {
            int y = top + j * rowH;
            sb.Append($"<text x=\"{labelW - 6}\" y=\"{y + 14}\" text-anchor=\"end\" font-size=\"12\">{E(metrics[j].Name)} {(metrics[j].Up ? "↑" : "↓")}</text>");
            for (int i = 0; i < methods.Count; i++)
            {
                if (rank[i]?[j] is not JsonValue rv) continue;
                double r = rv.GetValue<double>(), t = worst > 1 ? (r - 1) / (worst - 1) : 0;
                int red = (int)(60 + 180 * t), green = (int)(170 - 110 * t);
                double cx = labelW + colW * (i + 0.5);
                sb.Append($"<circle cx=\"{F(cx)}\" cy=\"{y + 10}\" r=\"8\" fill=\"rgb({red},{green},80)\"/>")
                  .Append($"<text x=\"{F(cx + 12)}\" y=\"{y + 14}\" font-size=\"11\">{r.ToString("0.#", CultureInfo.InvariantCulture)}</text>");
            }
        }
        sb.Append("</svg><figcaption>Rank of each method per metric (1 = best; ↑/↓: the metric's direction)</figcaption></figure>");
    }
}
