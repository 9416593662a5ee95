namespace Loupe.Abstractions.Toolkit;

/// <summary>"Did you mean" suggestions.</summary>
public static class Suggest
{
    /// <summary>Levenshtein distance.</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }

    /// <summary>The closest candidate if it is plausibly a typo, else null.</summary>
    public static string? Closest(string value, IEnumerable<string> candidates)
    {
        string? best = null; int bestD = int.MaxValue;
        foreach (var c in candidates)
        {
            var d = Distance(value.ToLowerInvariant(), c.ToLowerInvariant());
            if (d < bestD) { bestD = d; best = c; }
        }
        return best != null && bestD <= Math.Max(2, value.Length / 3) ? best : null;
    }

    /// <summary>" (did you mean 'x'?)" or an empty string.</summary>
    public static string DidYouMean(string value, IEnumerable<string> candidates) =>
        Closest(value, candidates) is { } c ? $" (did you mean '{c}'?)" : "";
}
