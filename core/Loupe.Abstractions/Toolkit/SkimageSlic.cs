namespace Loupe.Abstractions.Toolkit;

/// <summary>SLIC superpixels as scikit-image 0.19's <c>slic(image, n_segments, compactness, start_label=0)</c> computes
/// them with its other defaults (what Quantus's IROF segments with): the image rescaled to [0, 1] by its global
/// minimum and maximum, three channels converted to CIE Lab (sRGB, D65, 2°), seeds on scikit-image's regular grid with
/// colour 0, ten k-means iterations in windows of ±2 grid steps (distance (Δy² + Δx²)/step² + Σ(colour/compactness −
/// centre)², ties to the earlier centre), then small regions merged into a neighbour (min 0.5×, BFS cap 3× the mean
/// segment size, 4-connectivity, raster order). Float64 throughout, in scikit-image's order of operations, so the labels
/// agree with its output (tests/fixtures/make_slic_fixtures.py).</summary>
public static class SkimageSlic
{
    /// <summary>Labels (H×W, row-major, 0-based and dense as scikit-image's) of an H×W×C image (row-major, channels last).</summary>
    public static int[] Segment(double[] image, int h, int w, int c, int segments = 100, double compactness = 10)
    {
        if (image.Length != h * w * c) throw new ArgumentException($"SLIC: {image.Length} values for {h}×{w}×{c}");
        if (segments < 1 || compactness <= 0) throw new ArgumentException("SLIC: segments ≥ 1 and compactness > 0");
        var img = Rescaled(image);
        if (c == 3) img = Lab(img);
        var (cy, cx, stepY, stepX) = Grid(h, w, segments);
        int k = cy.Length, f = 2 + c;
        double step = Math.Max(stepY, stepX), ratio = 1.0 / compactness;
        for (int i = 0; i < img.Length; i++) img[i] *= ratio;
        var centres = new double[k * f];
        for (int j = 0; j < k; j++) { centres[j * f] = cy[j]; centres[j * f + 1] = cx[j]; }
        var labels = KMeans(img, h, w, c, centres, step, h * w);
        double size = h * w / (double)k;
        return Connect(labels, h, w, (int)(0.5 * size), (int)(3 * size));
    }

    static double[] Rescaled(double[] image)
    {
        var img = (double[])image.Clone();
        double min = img.Min();
        for (int i = 0; i < img.Length; i++) img[i] -= min;
        double max = img.Max();
        if (max != 0) for (int i = 0; i < img.Length; i++) img[i] /= max;
        return img;
    }

    /// <summary>scikit-image's rgb2lab (sRGB companding, its XYZ matrix, D65 2° white).</summary>
    static double[] Lab(double[] rgb)
    {
        var lab = new double[rgb.Length];
        double[] white = [0.95047, 1.0, 1.08883];
        double[,] m = { { 0.412453, 0.357580, 0.180423 }, { 0.212671, 0.715160, 0.072169 }, { 0.019334, 0.119193, 0.950227 } };
        Span<double> lin = stackalloc double[3];
        Span<double> t = stackalloc double[3];
        for (int p = 0; p < rgb.Length; p += 3)
        {
            for (int i = 0; i < 3; i++)
            {
                double v = rgb[p + i];
                lin[i] = v > 0.04045 ? Math.Pow((v + 0.055) / 1.055, 2.4) : v / 12.92;
            }
            for (int i = 0; i < 3; i++)
            {
                double xyz = lin[0] * m[i, 0] + lin[1] * m[i, 1] + lin[2] * m[i, 2];
                double r = xyz / white[i];
                t[i] = r > 0.008856 ? Math.Cbrt(r) : 7.787 * r + 16.0 / 116.0;
            }
            lab[p] = 116.0 * t[1] - 16.0;
            lab[p + 1] = 500.0 * (t[0] - t[1]);
            lab[p + 2] = 200.0 * (t[1] - t[2]);
        }
        return lab;
    }

    /// <summary>scikit-image's <c>regular_grid</c> on a (1, H, W) volume: the seeds' rows and columns and the steps.</summary>
    static (double[] Y, double[] X, int StepY, int StepX) Grid(int h, int w, int n)
    {
        long[] shape = [1, h, w];
        var order = Enumerable.Range(0, 3).OrderBy(i => shape[i]).ToArray();   // stable, as numpy's argsort on 3 values
        var sorted = order.Select(i => (double)shape[i]).ToArray();
        var steps = new double[3];
        double space = h * (double)w;
        if (space <= n) steps = [1, 1, 1];   // slice(None): every position
        else
        {
            Array.Fill(steps, Math.Pow(space / n, 1.0 / 3));
            if (sorted.Where((d, i) => d < steps[i]).Any())
                for (int dim = 0; dim < 3; dim++)
                {
                    steps[dim] = sorted[dim];
                    double rest = 1;
                    for (int j = dim + 1; j < 3; j++) rest *= sorted[j];
                    for (int j = dim + 1; j < 3; j++) steps[j] = Math.Pow(rest / n, 1.0 / (3 - dim - 1));
                    if (sorted.Select((d, i) => d >= steps[i]).All(ok => ok)) break;
                }
        }
        var starts = new int[3]; var ints = new int[3];
        for (int i = 0; i < 3; i++)
        {
            starts[i] = space <= n ? 0 : (int)Math.Floor(steps[i] / 2);
            ints[i] = space <= n ? 1 : (int)Math.Round(steps[i], MidpointRounding.ToEven);
        }
        int[] byDim = new int[3], startByDim = new int[3];
        for (int i = 0; i < 3; i++) { byDim[order[i]] = ints[i]; startByDim[order[i]] = starts[i]; }
        var ys = new List<double>(); var xs = new List<double>();
        for (int y = startByDim[1]; y < h; y += byDim[1])
            for (int x = startByDim[2]; x < w; x += byDim[2]) { ys.Add(y); xs.Add(x); }
        return ([.. ys], [.. xs], byDim[1], byDim[2]);
    }

    /// <summary>scikit-image's <c>_slic_cython</c> for one plane: ten iterations of windowed assignment and centre update.</summary>
    static int[] KMeans(double[] img, int h, int w, int c, double[] centres, double step, int pixels)
    {
        int f = 2 + c, k = centres.Length / f;
        // The windows use the grid step of the actual number of centres (scikit-image recomputes the grid).
        var (_, _, stepY, stepX) = Grid(h, w, k);
        var labels = new int[pixels];
        var distance = new double[pixels];
        var count = new long[k];
        double weight = 1.0 / (step * step);
        for (int iteration = 0; iteration < 10; iteration++)
        {
            bool change = false;
            Array.Fill(distance, double.MaxValue);
            for (int j = 0; j < k; j++)
            {
                double cy = centres[j * f], cx = centres[j * f + 1];
                int y0 = (int)Math.Max(cy - 2 * stepY, 0), y1 = (int)Math.Min(cy + 2 * stepY + 1, h);
                int x0 = (int)Math.Max(cx - 2 * stepX, 0), x1 = (int)Math.Min(cx + 2 * stepX + 1, w);
                for (int y = y0; y < y1; y++)
                {
                    double dy = cy - y;
                    dy *= dy;
                    for (int x = x0; x < x1; x++)
                    {
                        double dx = cx - x;
                        dx *= dx;
                        double d = (0.0 + dy + dx) * weight, colour = 0;
                        int p = y * w + x;
                        for (int ch = 0; ch < c; ch++)
                        {
                            double t = img[p * c + ch] - centres[j * f + 2 + ch];
                            colour += t * t;
                        }
                        d += colour;
                        if (distance[p] > d) { labels[p] = j; distance[p] = d; change = true; }
                    }
                }
            }
            if (!change) break;
            Array.Clear(count);
            Array.Clear(centres);
            for (int y = 0, p = 0; y < h; y++)
                for (int x = 0; x < w; x++, p++)
                {
                    int j = labels[p];
                    count[j]++;
                    centres[j * f] += y;
                    centres[j * f + 1] += x;
                    for (int ch = 0; ch < c; ch++) centres[j * f + 2 + ch] += img[p * c + ch];
                }
            for (int j = 0; j < k; j++)
                for (int i = 0; i < f; i++) centres[j * f + i] /= count[j];
        }
        return labels;
    }

    /// <summary>scikit-image's <c>_enforce_label_connectivity_cython</c> on one plane with start label 0.</summary>
    static int[] Connect(int[] segments, int h, int w, int minSize, int maxSize)
    {
        var connected = new int[segments.Length];
        Array.Fill(connected, -1);
        var queue = new int[Math.Max(maxSize, 1)];
        int next = 0;
        for (int p0 = 0; p0 < segments.Length; p0++)
        {
            if (connected[p0] >= 0) continue;
            int adjacent = next, label = segments[p0], size = 1, visited = 0;
            connected[p0] = next;
            queue[0] = p0;
            while (visited < size && size < maxSize)
            {
                int y = queue[visited] / w, x = queue[visited] % w;
                // scikit-image's neighbour order: x+1, x−1, y+1, y−1.
                for (int i = 0; i < 4; i++)
                {
                    int yy = y + (i == 2 ? 1 : i == 3 ? -1 : 0), xx = x + (i == 0 ? 1 : i == 1 ? -1 : 0);
                    if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue;
                    int q = yy * w + xx;
                    if (segments[q] == label && connected[q] < 0)
                    {
                        connected[q] = next;
                        queue[size++] = q;
                        if (size >= maxSize) break;
                    }
                    else if (connected[q] >= 0 && connected[q] != next) adjacent = connected[q];
                }
                visited++;
            }
            if (size < minSize)
                for (int i = 0; i < size; i++) connected[queue[i]] = adjacent;
            else next++;
        }
        return connected;
    }
}
