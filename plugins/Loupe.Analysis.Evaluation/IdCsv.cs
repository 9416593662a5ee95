using System.Globalization;
using Loupe.Abstractions;

namespace Loupe.Analysis.Evaluation;

/// <summary>CSV files of per-input rows <c>id,v1,…,vk</c> given to a metric (object boxes, mosaic quadrants): files
/// from strangers, so their size is capped and a bad line is an error naming the file and line. Blank lines and lines
/// starting with '#' are skipped; the first line may be a header.</summary>
public static class IdCsv
{
    /// <summary>Byte cap of such a file.</summary>
    public const long MaxBytes = 64L << 20;

    /// <summary>The rows of <paramref name="file"/> as (line number, id, k integers); <paramref name="format"/> names
    /// the expected layout in errors (e.g. <c>'id,x0,y0,x1,y1'</c>).</summary>
    public static IEnumerable<(int Line, string Id, int[] Values)> Integers(string file, int k, string format)
    {
        SafeFile.RequireRegular(file, file);
        if (new FileInfo(file).Length > MaxBytes) throw new LoupeException($"{file} is larger than {MaxBytes >> 20} MiB");
        int i = 0;
        bool any = false;
        foreach (var raw in File.ReadLines(file))
        {
            i++;
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var f = line.Split(',').Select(s => s.Trim()).ToArray();
            var v = new int[k];
            bool ok = f.Length == k + 1 && f[0].Length > 0 && Enumerable.Range(0, k).All(j => int.TryParse(f[j + 1], NumberStyles.Integer, CultureInfo.InvariantCulture, out v[j]));
            if (!ok)
            {
                if (!any && i == 1) continue;   // a header line
                throw new LoupeException($"{file}:{i}: expected {format} with integers, got '{SafeFile.Printable(line.Length > 80 ? line[..80] + "…" : line)}'");
            }
            any = true;
            yield return (i, f[0], v);
        }
    }
}
