using TorchSharp;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

/// <summary>Operators of torchvision's detectors as torchvision exports them (Faster R-CNN, RetinaNet, FCOS, SSD):
/// the box arithmetic (Ceil, Floor, Max, Min, ReduceProd, Xor, Tile), InstanceNormalization (FCOS's GroupNorm), the candidate selection (TopK, NonZero, GatherND,
/// ScatterElements, NonMaxSuppression) and RoiAlign. Indices carry no gradient; values do (TopK's values, GatherND,
/// RoiAlign's features: torchvision's roi_align gives no gradient to the boxes either).</summary>
public static partial class Ops
{
    /// <summary>Adds the operators of this file to the table.</summary>
    static Dictionary<string, OpFn> WithDetectionOps(Dictionary<string, OpFn> table)
    {
        table["Ceil"] = (n, x) => One(x[0]!.ceil());
        table["Floor"] = (n, x) => One(x[0]!.floor());
        table["Max"] = (n, x) => One(x.OfType<Tensor>().Aggregate((a, b) => a.maximum(b)));
        table["Min"] = (n, x) => One(x.OfType<Tensor>().Aggregate((a, b) => a.minimum(b)));
        table["Xor"] = (n, x) => One(x[0]!.logical_xor(x[1]!));
        table["NonZero"] = (n, x) => One(x[0]!.detach().nonzero().t().contiguous());
        table["Tile"] = (n, x) => One(Tile(n, x[0]!, x[1]!));
        table["InstanceNormalization"] = (n, x) => One(InstanceNorm(n, x[0]!, x[1]!, x[2]!));
        table["TopK"] = (n, x) => TopK(n, x);
        table["GatherND"] = (n, x) => One(GatherND(n, x[0]!, x[1]!));
        table["ScatterElements"] = (n, x) => One(ScatterElements(n, x[0]!, x[1]!, x[2]!));
        table["RoiAlign"] = (n, x) => One(RoiAlign(n, x[0]!, x[1]!, x[2]!));
        table["NonMaxSuppression"] = (n, x) => One(NonMaxSuppression(n, x));
        return table;
    }

    /// <summary>Load-time checks of the operators of this file.</summary>
    static void CheckDetectionOps(OnnxNode n)
    {
        switch (n.OpType)
        {
            case "GatherND":
                if (n.Int("batch_dims", 0) != 0) throw n.Error("batch_dims other than 0 is not supported");
                break;
            case "ScatterElements":
                if (n.String("reduction", "none") is not ("none" or "add" or "mul" or "max" or "min")) throw n.Error($"reduction '{n.String("reduction", "")}' is not supported (none, add, mul, max, min)");
                break;
            case "RoiAlign":
                if (n.String("mode", "avg") != "avg") throw n.Error($"mode '{n.String("mode", "")}' is not supported (avg, torchvision's)");
                if (n.String("coordinate_transformation_mode", n.Opset >= 16 ? "half_pixel" : "output_half_pixel") is not ("half_pixel" or "output_half_pixel"))
                    throw n.Error($"coordinate_transformation_mode '{n.String("coordinate_transformation_mode", "")}' is not supported");
                if (n.Int("output_height", 1) is < 1 or > 1024 || n.Int("output_width", 1) is < 1 or > 1024)
                    throw n.Error("output_height and output_width must be 1–1024");
                if (n.Int("sampling_ratio", 0) is < 0 or > 64) throw n.Error("sampling_ratio must be 0–64");
                break;
            case "NonMaxSuppression":
                if (n.Int("center_point_box", 0) is not (0 or 1)) throw n.Error("center_point_box must be 0 or 1");
                break;
        }
    }

    /// <summary>(x − mean) / √(var + ε) · scale + B per instance and channel, over the dims after the channel (biased
    /// variance): the GroupNorm of FCOS's heads, which the exporter writes as Reshape, InstanceNormalization, Reshape.</summary>
    static Tensor InstanceNorm(OnnxNode n, Tensor x, Tensor scale, Tensor bias)
    {
        if (x.dim() < 3 || scale.numel() != x.shape[1] || bias.numel() != x.shape[1])
            throw n.Error($"input ({string.Join("×", x.shape)}) needs rank ≥ 3 and scale, B of its {(x.dim() > 1 ? x.shape[1] : 0)} channels (got {scale.numel()}, {bias.numel()})");
        var dims = Enumerable.Range(2, (int)x.dim() - 2).Select(d => (long)d).ToArray();
        var mean = x.mean(dims, keepdim: true);
        var centred = x - mean;
        var variance = centred.square().mean(dims, keepdim: true);
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[1] = x.shape[1];
        return centred / (variance + n.Float("epsilon", 1e-5f)).sqrt() * scale.reshape(shape) + bias.reshape(shape);
    }

    /// <summary>The input repeated <c>repeats</c>[d] times along each dim d.</summary>
    static Tensor Tile(OnnxNode n, Tensor x, Tensor repeats)
    {
        var r = Longs(repeats);
        if (r.Length != x.dim() || r.Any(v => v < 0)) throw n.Error($"repeats ({string.Join(", ", r)}) must give one count ≥ 0 per dim of the input ({string.Join("×", x.shape)})");
        // (the product is checked dim by dim before it is formed: 8 × 2^62 would wrap around to a small number)
        if (x.shape.Zip(r).Any(p => p.First > 0 && p.Second > OnnxNode.MaxOutputBytes / p.First))
            throw n.Error($"repeats ({string.Join(", ", r)}) of ({string.Join("×", x.shape)}) are over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB");
        n.CheckOutput(x.shape.Zip(r, (d, k) => d * k));
        return x.repeat(r);
    }

    /// <summary>The k largest (or smallest) values along an axis and their Int64 indices; k from the input (opset 10+)
    /// or the attribute.</summary>
    static Tensor[] TopK(OnnxNode n, Tensor?[] x)
    {
        var data = x[0]!;
        long axis = Axis(n.Int("axis", -1), data.dim());
        if (axis < 0 || axis >= data.dim()) throw n.Error($"axis {n.Int("axis", -1)} is outside the input's {data.dim()} dims");
        long k = n.Opset >= 10 ? (x.Length > 1 && x[1] is { } kt && kt.numel() == 1 ? Longs(kt)[0] : throw n.Error("needs K as its second input"))
            : n.Int("k", -1);
        if (k < 0 || k > data.shape[axis]) throw n.Error($"K = {k} is outside 0..{data.shape[axis]} (the axis' size)");
        var (values, indices) = data.topk((int)k, (int)axis, n.Int("largest", 1) != 0, n.Int("sorted", 1) != 0);
        return [values, indices];
    }

    /// <summary>data[indices[..., 0], …, indices[..., k−1]] for each index tuple (batch_dims 0; negative indices count
    /// from the end).</summary>
    static Tensor GatherND(OnnxNode n, Tensor data, Tensor indices)
    {
        long k = indices.dim() < 1 ? 0 : indices.shape[^1];
        if (k < 1 || k > data.dim()) throw n.Error($"indices ({string.Join("×", indices.shape)}) do not index data ({string.Join("×", data.shape)})");
        var lead = data.shape[..(int)k];
        var rest = data.shape[(int)k..];
        n.CheckOutput([.. indices.shape[..^1], .. rest]);
        var idx = indices.to(ScalarType.Int64);
        var linear = zeros(indices.shape[..^1], ScalarType.Int64);
        for (int j = 0; j < k; j++)
        {
            var column = idx.select(-1, j);
            if (column.numel() > 0 && (column.lt(-lead[j]).any().item<bool>() || column.ge(lead[j]).any().item<bool>()))
                throw n.Error($"an index is outside dimension {j} of size {lead[j]}");
            linear = linear * lead[j] + column.remainder(lead[j]);
        }
        var flat = data.reshape([lead.Aggregate(1L, (a, b) => a * b), .. rest]);
        return flat.index_select(0, linear.flatten()).reshape([.. indices.shape[..^1], .. rest]);
    }

    static Tensor ScatterElements(OnnxNode n, Tensor data, Tensor indices, Tensor updates)
    {
        long axis = Axis(n.Int("axis", 0), data.dim());
        if (axis < 0 || axis >= data.dim() || indices.dim() != data.dim() || !indices.shape.SequenceEqual(updates.shape))
            throw n.Error($"data ({string.Join("×", data.shape)}), indices ({string.Join("×", indices.shape)}) and updates ({string.Join("×", updates.shape)}) do not match on axis {axis}");
        var idx = indices.to(ScalarType.Int64);
        long size = data.shape[axis];
        if (idx.numel() > 0 && (idx.lt(-size).any().item<bool>() || idx.ge(size).any().item<bool>())) throw n.Error($"an index is outside axis {axis} of size {size}");
        for (int d = 0; d < data.dim(); d++)
            if (d != axis && idx.shape[d] > data.shape[d]) throw n.Error($"indices are larger than data on dimension {d}");
        idx = idx.remainder(size);
        if (n.String("reduction", "none") == "none") return data.scatter(axis, idx, updates.to(data.dtype));
        // A reduction: each update's place in the flattened data (its own index on the axis, its position elsewhere).
        var strides = new long[data.dim()];
        long stride = 1;
        for (int d = (int)data.dim() - 1; d >= 0; d--) { strides[d] = stride; stride *= data.shape[d]; }
        var place = idx * strides[axis];
        for (int d = 0; d < data.dim(); d++)
            if (d != axis)
            {
                var shape = Enumerable.Repeat(1L, (int)data.dim()).ToArray();
                shape[d] = idx.shape[d];
                place = place + arange(idx.shape[d], dtype: ScalarType.Int64).view(shape) * strides[d];
            }
        return ScatterRows(n, data.reshape(-1), place.reshape(-1), updates.to(data.dtype).reshape(-1)).reshape(data.shape);
    }

    /// <summary>Average RoiAlign (Mask R-CNN's; torchvision's roi_align): R×C×oh×ow features of each box of
    /// <paramref name="rois"/> (R×4, x1 y1 x2 y2 in input units, scaled by <c>spatial_scale</c>) in image
    /// <paramref name="batch"/>[r] of <paramref name="x"/> (N×C×H×W): each bin the mean of grid_h × grid_w bilinear
    /// samples (<c>sampling_ratio</c>, or ⌈roi size / bins⌉ per box when 0), a sample outside [−1, H] × [−1, W] counting
    /// as 0. <c>output_half_pixel</c> (opset 10, torchvision's aligned=False) takes the box as given and at least one
    /// pixel wide; <c>half_pixel</c> shifts it by half a pixel. Computed as a gather of each sample's four neighbours
    /// and a weighted sum, so the features keep their gradient; the boxes get none.</summary>
    static Tensor RoiAlign(OnnxNode n, Tensor x, Tensor rois, Tensor batch)
    {
        if (x.dim() != 4 || rois.dim() != 2 || rois.shape[1] != 4 || batch.numel() != rois.shape[0])
            throw n.Error($"X ({string.Join("×", x.shape)}), rois ({string.Join("×", rois.shape)}) and batch_indices ({string.Join("×", batch.shape)}) do not match (N×C×H×W, R×4, R)");
        long c = x.shape[1], h = x.shape[2], w = x.shape[3], r = rois.shape[0];
        long oh = n.Int("output_height", 1), ow = n.Int("output_width", 1), ratio = n.Int("sampling_ratio", 0);
        n.CheckOutput([r, c, oh, ow]);
        var b = batch.to(ScalarType.Int64).flatten();
        if (r > 0 && (b.lt(0).any().item<bool>() || b.ge(x.shape[0]).any().item<bool>())) throw n.Error($"a batch index is outside 0..{x.shape[0] - 1}");
        if (r == 0) return zeros([0, c, oh, ow], x.dtype);
        bool half = n.String("coordinate_transformation_mode", n.Opset >= 16 ? "half_pixel" : "output_half_pixel") == "half_pixel";
        float scale = n.Float("spatial_scale", 1f), offset = half ? 0.5f : 0f;
        var box = rois.detach().to(ScalarType.Float32).cpu().ToArray<float>();
        var image = b.cpu().ToArray<long>();
        var rows = new Tensor[r];
        // Boxes grouped by their sampling grid (fixed, or adaptive per box) and image: one pair of products per group.
        var groups = Enumerable.Range(0, (int)r).GroupBy(i =>
        {
            var (_, _, bh, bw) = Geometry(box, i, scale, offset, half);
            long gh = ratio > 0 ? ratio : Math.Max(0, (long)Math.Ceiling(bh / oh)), gw = ratio > 0 ? ratio : Math.Max(0, (long)Math.Ceiling(bw / ow));
            return (gh, gw, image[i]);
        });
        foreach (var g in groups)
        {
            var (gh, gw, img) = g.Key;
            var all = g.ToArray();
            if (gh == 0 || gw == 0)
            {
                // No sample in the box (an empty box under half_pixel, adaptive grid): ONNX Runtime gives 0.
                foreach (var i in all) rows[i] = zeros([c, oh, ow], x.dtype);
                continue;
            }
            if (gh * oh > 4096 || gw * ow > 4096) throw n.Error($"a box needs {gh * oh}×{gw * ow} samples; set sampling_ratio");
            var f = x[img].to(ScalarType.Float32).reshape(c, h * w);                             // C×(H·W)
            long sy = oh * gh, sx = ow * gw;
            // At most ~16 M gathered values per chunk of boxes (C × boxes × samples × 4 corners).
            long chunk = Math.Max(1, (16L << 20) / Math.Max(1, c * sy * sx * 4));
            foreach (var members in all.Chunk((int)Math.Min(chunk, int.MaxValue)))
            {
                // Each sample is its four neighbours weighted (zero weights outside): a gather and a weighted sum, so
                // the backward pass keeps the indices and weights, not the m×C×… values (Faster R-CNN ResNet-50's
                // 1000 boxes on its 80×80 level would keep ~1 GB per image with products of dense weight matrices).
                var (index, weight) = Corners(members.Select(i => Geometry(box, i, scale, offset, half)).ToArray(), oh, gh, ow, gw, h, w);
                var values = f.index_select(1, index).view(c, members.Length, sy * sx, 4);
                var samples = (values * weight.view(1, members.Length, sy * sx, 4)).sum(-1);         // C×m×(Sy·Sx)
                var pooled = samples.view(c, members.Length, oh, gh, ow, gw).mean([3, 5]).permute(1, 0, 2, 3);
                for (int k = 0; k < members.Length; k++) rows[members[k]] = pooled[k];
            }
        }
        return stack(rows).to(x.dtype);
    }

    /// <summary>A box's start (y, x) and size (h, w) in feature units.</summary>
    static (float Y, float X, float H, float W) Geometry(float[] box, int i, float scale, float offset, bool half)
    {
        float x1 = box[i * 4] * scale - offset, y1 = box[i * 4 + 1] * scale - offset;
        float bw = box[i * 4 + 2] * scale - offset - x1, bh = box[i * 4 + 3] * scale - offset - y1;
        if (!half) { bw = Math.Max(bw, 1f); bh = Math.Max(bh, 1f); }
        return (y1, x1, bh, bw);
    }

    /// <summary>One axis' bilinear neighbours of sample <paramref name="s"/> of a box: the lower and upper index and
    /// their weights (both 0 when the sample lies outside [−1, size]), as ONNX Runtime clamps them.</summary>
    static (long Low, long High, float WLow, float WHigh) Neighbours(float start, float length, long bins, long grid, long s, long size)
    {
        float bin = length / bins;
        long p = s / grid, k = s % grid;
        float v = start + p * bin + (k + 0.5f) * bin / grid;
        if (v < -1f || v > size) return (0, 0, 0, 0);
        if (v <= 0) v = 0;
        long low = (long)v;
        if (low >= size - 1) return (size - 1, size - 1, 1, 0);
        return (low, low + 1, 1 - (v - low), v - low);
    }

    /// <summary>The four neighbours of every sample of every box: flat H·W indices and bilinear weights, boxes ×
    /// (Sy·Sx) × 4 (corners low-low, low-high, high-low, high-high).</summary>
    static (Tensor Index, Tensor Weight) Corners((float Y, float X, float H, float W)[] boxes, long oh, long gh, long ow, long gw, long h, long w)
    {
        long sy = oh * gh, sx = ow * gw;
        var index = new long[boxes.Length * sy * sx * 4];
        var weight = new float[index.Length];
        for (int m = 0; m < boxes.Length; m++)
            for (long a = 0; a < sy; a++)
            {
                var (y0, y1, wy0, wy1) = Neighbours(boxes[m].Y, boxes[m].H, oh, gh, a, h);
                for (long b = 0; b < sx; b++)
                {
                    var (x0, x1, wx0, wx1) = Neighbours(boxes[m].X, boxes[m].W, ow, gw, b, w);
                    long at = ((m * sy + a) * sx + b) * 4;
                    (index[at], index[at + 1], index[at + 2], index[at + 3]) = (y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1);
                    (weight[at], weight[at + 1], weight[at + 2], weight[at + 3]) = (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1);
                }
            }
        return (tensor(index), tensor(weight));
    }

    /// <summary>ONNX NonMaxSuppression: per batch and class, the boxes scoring above score_threshold in decreasing score
    /// order (the lower index first on ties), each kept unless its IoU with a kept box exceeds iou_threshold, at most
    /// max_output_boxes_per_class (0 or absent: none); selected_indices K×3 (batch, class, box), Int64.</summary>
    static Tensor NonMaxSuppression(OnnxNode n, Tensor?[] x)
    {
        var boxes = x[0]!.detach().to(ScalarType.Float32).cpu().contiguous();
        var scores = x[1]!.detach().to(ScalarType.Float32).cpu().contiguous();
        if (boxes.dim() != 3 || boxes.shape[2] != 4 || scores.dim() != 3 || scores.shape[0] != boxes.shape[0] || scores.shape[2] != boxes.shape[1])
            throw n.Error($"boxes ({string.Join("×", boxes.shape)}) and scores ({string.Join("×", scores.shape)}) must be B×N×4 and B×C×N");
        long most = x.Length > 2 && x[2] is { } m && m.numel() > 0 ? Longs(m)[0] : 0;
        float iouLimit = x.Length > 3 && x[3] is { } t && t.numel() > 0 ? t.to(ScalarType.Float32).item<float>() : 0f;
        float? scoreLimit = x.Length > 4 && x[4] is { } s && s.numel() > 0 ? s.to(ScalarType.Float32).item<float>() : null;
        if (iouLimit is < 0 or > 1 || float.IsNaN(iouLimit)) throw n.Error($"iou_threshold {iouLimit} is outside [0, 1]");
        bool center = n.Int("center_point_box", 0) == 1;
        long batches = boxes.shape[0], count = boxes.shape[1], classes = scores.shape[1];
        // Greedy suppression compares each candidate with the boxes kept so far (SSDlite: 27,000 candidates, a few
        // hundred kept); the comparisons are counted so that a file cannot make it run for minutes.
        long comparisons = 0;
        var bv = boxes.ToArray<float>();
        var sv = scores.ToArray<float>();
        var selected = new List<long>();
        var corners = new float[count * 4];
        for (long bi = 0; bi < batches; bi++)
        {
            for (long i = 0; i < count; i++)
            {
                long a = (bi * count + i) * 4;
                float v0 = bv[a], v1 = bv[a + 1], v2 = bv[a + 2], v3 = bv[a + 3];
                if (center) (corners[i * 4], corners[i * 4 + 1], corners[i * 4 + 2], corners[i * 4 + 3]) = (v1 - v3 / 2, v0 - v2 / 2, v1 + v3 / 2, v0 + v2 / 2);
                else (corners[i * 4], corners[i * 4 + 1], corners[i * 4 + 2], corners[i * 4 + 3]) = (Math.Min(v0, v2), Math.Min(v1, v3), Math.Max(v0, v2), Math.Max(v1, v3));
            }
            for (long ci = 0; ci < classes; ci++)
            {
                long at = (bi * classes + ci) * count;
                var order = Enumerable.Range(0, (int)count).Where(i => scoreLimit is not { } l || sv[at + i] > l)
                    .OrderByDescending(i => sv[at + i]).ThenBy(i => i).ToArray();
                var kept = new List<int>();
                foreach (var i in order)
                {
                    if (kept.Count >= most) break;
                    bool keep = true;
                    foreach (var k in kept)
                        if (Iou(corners, i, k) > iouLimit) { keep = false; break; }
                    comparisons += kept.Count;
                    if (comparisons > MaxNmsComparisons)
                        throw n.Error($"suppression over {count} boxes needs more than {MaxNmsComparisons:E0} box comparisons, this backend's bound");
                    if (keep) kept.Add(i);
                }
                foreach (var k in kept) selected.AddRange([bi, ci, k]);
            }
        }
        return tensor(selected.ToArray(), [selected.Count / 3, 3]);
    }

    /// <summary>Most box comparisons one NonMaxSuppression may make (a few seconds).</summary>
    const long MaxNmsComparisons = 2_000_000_000;

    /// <summary>IoU of boxes i and j (y1 x1 y2 x2 corners); 0 when either has no area.</summary>
    static float Iou(float[] c, int i, int j)
    {
        float ai = (c[i * 4 + 2] - c[i * 4]) * (c[i * 4 + 3] - c[i * 4 + 1]), aj = (c[j * 4 + 2] - c[j * 4]) * (c[j * 4 + 3] - c[j * 4 + 1]);
        if (ai <= 0 || aj <= 0) return 0;
        float y1 = Math.Max(c[i * 4], c[j * 4]), x1 = Math.Max(c[i * 4 + 1], c[j * 4 + 1]);
        float y2 = Math.Min(c[i * 4 + 2], c[j * 4 + 2]), x2 = Math.Min(c[i * 4 + 3], c[j * 4 + 3]);
        float inter = Math.Max(0, y2 - y1) * Math.Max(0, x2 - x1);
        return inter / (ai + aj - inter);
    }
}
