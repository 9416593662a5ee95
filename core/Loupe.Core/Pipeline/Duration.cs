namespace Loupe.Core;

/// <summary>Durations in pipeline files: <c>500ms</c>, <c>30s</c>, <c>2m</c>, <c>1h</c>, or a number of seconds.</summary>
public static class Duration
{
    static readonly System.Text.RegularExpressions.Regex Rx = new(@"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$");

    /// <summary>Longest duration accepted (24 days: timers take at most int.MaxValue milliseconds).</summary>
    public static readonly TimeSpan Max = TimeSpan.FromDays(24);

    /// <summary>Parses a duration; null when the text is not one or is longer than <see cref="Max"/>.</summary>
    public static TimeSpan? Parse(string? text)
    {
        var m = Rx.Match(text ?? "");
        if (!m.Success) return null;
        var v = double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        var ms = v * m.Groups[2].Value switch { "ms" => 1, "m" => 60_000, "h" => 3_600_000, _ => 1000 };
        // Timers take at most int.MaxValue ms (24.8 days); a longer (or overflowing) value is not a duration.
        return ms <= Max.TotalMilliseconds ? TimeSpan.FromMilliseconds(ms) : null;
    }

    /// <summary>Short text, e.g. 1.5 s.</summary>
    public static string Format(TimeSpan t) => t.TotalSeconds < 1 ? $"{t.TotalMilliseconds:0} ms" : $"{t.TotalSeconds:0.#} s";
}
