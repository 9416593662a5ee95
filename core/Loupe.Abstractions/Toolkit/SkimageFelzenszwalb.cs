namespace Loupe.Abstractions.Toolkit;

/// <summary>Felzenszwalb &amp; Huttenlocher's (2004) graph-based segmentation as scikit-image 0.19's
/// <c>felzenszwalb(image, scale, sigma, min_size)</c> computes it (Quantus's IROF with
/// <c>segmentation_method="felzenszwalb"</c> calls it with its defaults, on the model input, channels last): the image
/// as given (float64, no rescaling), smoothed per channel by a Gaussian of <c>sigma</c> (scipy's 1-D kernels, radius
/// ⌊4σ + 0.5⌋, mirrored borders, rows then columns); the 8-neighbour graph (right, down, down-right and up-right edges,
/// in that order, each in raster order) weighted by the Euclidean distance of the smoothed colours; edges in increasing
/// weight, an edge joining two components when its weight is below both components' internal weight plus
/// (scale / 255) / size (the thresholds in float32, as scikit-image declares them); then, over the same edges,
/// components smaller than <c>min_size</c> joined to their neighbour. Labels 0..K−1 in the order of each segment's
/// first pixel. Equal weights are taken in edge order; scikit-image's quicksort may take them in another, which can
/// change a segment where two edges of exactly the same nonzero weight compete (tests/fixtures/make_felzenszwalb_fixtures.py).
/// </summary>
public static class SkimageFelzenszwalb
{
    /// <summary>Labels (H×W, row-major, 0-based and dense as scikit-image's) of an H×W×C image (row-major, channels last).</summary>
    public static int[] Segment(double[] image, int h, int w, int c, double scale = 1, double sigma = 0.8, int minSize = 20)
    {
        if (image.Length != (long)h * w * c || h < 1 || w < 1 || c < 1) throw new ArgumentException($"felzenszwalb: {image.Length} values for {h}×{w}×{c}");
        if (!(scale > 0) || !(sigma >= 0) || minSize < 0) throw new ArgumentException("felzenszwalb: scale > 0, sigma ≥ 0 and min_size ≥ 0");
        var smooth = Smoothed(image, h, w, c, sigma);
        var (a, b, cost) = Edges(smooth, h, w, c);
        var order = Enumerable.Range(0, cost.Length).ToArray();
        Array.Sort((double[])cost.Clone(), order);   // introsort on keys: ties are broken below by index
        StableTies(order, cost);
        int n = h * w;
        var parent = new int[n];
        var size = new long[n];
        var inner = new double[n];
        for (int i = 0; i < n; i++) { parent[i] = i; size[i] = 1; }
        double k = scale / 255.0;
        foreach (int e in order)
        {
            int s0 = Root(parent, a[e]), s1 = Root(parent, b[e]);
            if (s0 == s1) continue;
            float t0 = (float)(inner[s0] + k / size[s0]), t1 = (float)(inner[s1] + k / size[s1]);
            if (cost[e] < Math.Min(t0, t1))
            {
                int root = Join(parent, s0, s1);
                size[root] = size[s0] + size[s1];
                inner[root] = cost[e];
            }
        }
        foreach (int e in order)
        {
            int s0 = Root(parent, a[e]), s1 = Root(parent, b[e]);
            if (s0 == s1) continue;
            if (size[s0] < minSize || size[s1] < minSize)
            {
                int root = Join(parent, s0, s1);
                size[root] = size[s0] + size[s1];
            }
        }
        // Roots are each segment's smallest pixel index: numbering them in increasing order is np.unique's.
        var labels = new int[n];
        var number = new int[n];
        Array.Fill(number, -1);
        int next = 0;
        for (int p = 0; p < n; p++)
        {
            int r = Root(parent, p);
            if (number[r] < 0) number[r] = next++;
            labels[p] = number[r];
        }
        return labels;
    }

    /// <summary>Runs of equal weights put back in edge order (Array.Sort is not stable).</summary>
    static void StableTies(int[] order, double[] cost)
    {
        for (int i = 0; i < order.Length;)
        {
            int j = i + 1;
            while (j < order.Length && cost[order[j]] == cost[order[i]]) j++;
            if (j - i > 1) Array.Sort(order, i, j - i);
            i = j;
        }
    }

    static int Root(int[] parent, int p)
    {
        int r = p;
        while (parent[r] != r) r = parent[r];
        while (parent[p] != r) { int next = parent[p]; parent[p] = r; p = next; }
        return r;
    }

    /// <summary>Joins two roots under the smaller index (scikit-image's join_trees) and returns it.</summary>
    static int Join(int[] parent, int r0, int r1)
    {
        int root = Math.Min(r0, r1);
        parent[r0] = root;
        parent[r1] = root;
        return root;
    }

    /// <summary>The edges (pixel pairs) and their weights, in scikit-image's order: right, down, down-right, up-right.</summary>
    static (int[] A, int[] B, double[] Cost) Edges(double[] img, int h, int w, int c)
    {
        int count = h * (w - 1) + (h - 1) * w + 2 * (h - 1) * (w - 1);
        var a = new int[count];
        var b = new int[count];
        var cost = new double[count];
        int e = 0;
        void Add(int p, int q)
        {
            double sum = 0;
            for (int ch = 0; ch < c; ch++)
            {
                double d = img[p * c + ch] - img[q * c + ch];
                sum += d * d;
            }
            a[e] = p; b[e] = q; cost[e++] = Math.Sqrt(sum);
        }
        for (int y = 0; y < h; y++) for (int x = 0; x + 1 < w; x++) Add(y * w + x + 1, y * w + x);
        for (int y = 0; y + 1 < h; y++) for (int x = 0; x < w; x++) Add((y + 1) * w + x, y * w + x);
        for (int y = 0; y + 1 < h; y++) for (int x = 0; x + 1 < w; x++) Add((y + 1) * w + x + 1, y * w + x);
        for (int y = 0; y + 1 < h; y++) for (int x = 0; x + 1 < w; x++) Add(y * w + x + 1, (y + 1) * w + x);
        return (a, b, cost);
    }

    /// <summary>scipy.ndimage.gaussian_filter with sigma (σ, σ, 0), truncate 4, mode 'reflect' (d c b a | a b c d | d c
    /// b a): the normalised kernel exp(−x²/2σ²) over x = −r..r, r = ⌊4σ + 0.5⌋, applied along rows' axis 0 then axis 1,
    /// each output as scipy sums it for a symmetric kernel (the centre, then (right + left) × weight from the outermost pair in).</summary>
    static double[] Smoothed(double[] image, int h, int w, int c, double sigma)
    {
        if (sigma <= 1e-15) return (double[])image.Clone();
        int r = (int)(4.0 * sigma + 0.5);
        var kernel = new double[r + 1];
        double s2 = sigma * sigma;
        var phi = new double[2 * r + 1];
        for (int x = -r; x <= r; x++) phi[x + r] = Math.Exp(-0.5 / s2 * (x * x));
        double total = NumpySum(phi);
        for (int x = 0; x <= r; x++) kernel[x] = phi[x + r] / total;
        var once = Pass(image, h, w, c, kernel, alongRows: false);
        return Pass(once, h, w, c, kernel, alongRows: true);
    }

    /// <summary>numpy's sum of a short float64 array (pairwise summation below 128 values: eight running sums when
    /// there are at least eight values, combined pairwise, then the rest in order).</summary>
    static double NumpySum(double[] a)
    {
        int n = a.Length;
        if (n < 8)
        {
            double sum = 0;
            foreach (var v in a) sum += v;
            return sum;
        }
        if (n > 128) throw new ArgumentException("felzenszwalb: sigma too large for this port (kernel over 128 taps)");
        var r = new double[8];
        Array.Copy(a, r, 8);
        int i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }

    /// <summary>One 1-D pass: along axis 0 (down the columns) or axis 1 (along the rows).</summary>
    static double[] Pass(double[] src, int h, int w, int c, double[] kernel, bool alongRows)
    {
        int r = kernel.Length - 1, length = alongRows ? w : h, lines = alongRows ? h : w;
        var dst = new double[src.Length];
        var line = new double[length + 2 * r];
        for (int l = 0; l < lines; l++)
            for (int ch = 0; ch < c; ch++)
            {
                int Index(int i) => ((alongRows ? l * w + i : i * w + l) * c) + ch;
                for (int i = 0; i < length; i++) line[r + i] = src[Index(i)];
                for (int i = 1; i <= r; i++)
                {
                    line[r - i] = line[r + Reflect(-i, length)];
                    line[r + length - 1 + i] = line[r + Reflect(length - 1 + i, length)];
                }
                for (int i = 0; i < length; i++)
                {
                    int at = r + i;
                    double sum = line[at] * kernel[0];
                    for (int j = r; j >= 1; j--) sum += (line[at + j] + line[at - j]) * kernel[j];
                    dst[Index(i)] = sum;
                }
            }
        return dst;
    }

    /// <summary>scipy's 'reflect' index (half-sample symmetric, periodic with period 2n).</summary>
    static int Reflect(int i, int n)
    {
        int period = 2 * n;
        i %= period;
        if (i < 0) i += period;
        return i < n ? i : period - 1 - i;
    }
}
