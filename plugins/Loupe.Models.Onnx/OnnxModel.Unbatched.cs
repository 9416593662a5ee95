using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Models.Onnx;

public sealed partial class OnnxModel
{
    /// <summary>A forward of a graph that takes one C×H×W image (torchvision's detectors as torchvision exports them):
    /// the images run through the plan in step, node by node, each over its own values; a value that a capture or an
    /// intervention reads is joined into one batch (<see cref="Padded"/>), handed to them, and each image continues
    /// from its row of the result — so a captured layer is one N×… tensor that the outputs depend on (gradients reach
    /// it) and an intervention acts on every image. The graph's outputs gain a batch dimension, padded with zeros to
    /// the images' largest (a detector's D detections).</summary>
    /// <remarks>A graph whose input declares a batch of one (an export without dynamic axes, whose reshapes may have
    /// the 1 written in) runs the same way on rows of one (1×C×H×W, and each side input's row): a value keeps its
    /// leading 1 and the rows are concatenated.</remarks>
    Tensor ForwardImages(Tensor x, LayerCapture[] captures, Intervention[] interventions, ReluRule? relu, double beta, TorchSharp.DisposeScope scope)
    {
        int n = (int)x.shape[0];
        var envs = Enumerable.Range(0, n).Select(i => new Dictionary<string, Tensor>(_constants, StringComparer.Ordinal) { [_inputName] = _unbatched ? x[i] : x.narrow(0, i, 1) }).ToArray();
        foreach (var name in _side.Names)   // (none on unbatched graphs: refused at load)
        {
            var v = _side.ValueFor(name, n);
            foreach (var iv in interventions) if (iv.Value == name) v = iv.Transform(v);
            foreach (var c in captures) v = c.OnForward(name, v);
            for (int i = 0; i < n; i++) envs[i][name] = v.narrow(0, i, 1);
        }
        bool Watched(string value) => interventions.Any(iv => iv.Value == value) || captures.Any(c => c.Keeps(value));
        var plan = PlanFor(captures, interventions, relu);
        // Without gradients each row frees its values after their last reader, as a batched forward does.
        var releases = envs.Select(e => Releaser.For(this, plan, scope, e, captures, interventions)).ToArray();
        using var inStep = OnnxNode.RowsInStep(n);
        for (int position = 0; position < plan.Count; position++)
        {
            var node = plan[position];
            // The rows' outputs together are held to the budget one batched output is (OnnxNode.CheckOutput): a node
            // whose output for one image is within it may not be for the batch (found by tools/Loupe.Fuzz: a batch-of-one
            // graph padding to 940 MB per image, run on two).
            var outs = new Tensor[n][];
            long bytes = 0;
            for (int i = 0; i < n; i++)
            {
                outs[i] = Step(node, envs[i], relu, beta);
                bytes += outs[i].Sum(t => t.numel() * t.element_size());
                if (bytes > OnnxNode.MaxOutputBytes / n * (i + 1) && bytes > (1L << 20))
                    throw node.Error($"its outputs for {n} images ({string.Join(", ", outs[i].Select(t => string.Join("×", t.shape)))} each) are over the memory budget of {OnnxNode.MaxOutputBytes >> 20} MB; run fewer images per batch (settings: batch_size)");
            }
            for (int k = 0; k < node.Outputs.Length; k++)
            {
                var name = node.Outputs[k];
                if (name.Length == 0 || outs.Any(o => k >= o.Length)) continue;
                if (!Watched(name))
                {
                    for (int i = 0; i < n; i++)
                    {
                        envs[i][name] = outs[i][k];
                        releases[i]?.Stored(outs[i][k]);
                    }
                    continue;
                }
                var parts = outs.Select(o => o[k]).ToList();
                bool adds = Padded.AddsBatch(parts, _unbatched && _graphOutputs.Contains(name));
                var batched = Padded.Batch(parts, adds, _source);
                foreach (var iv in interventions) if (iv.Value == name) batched = iv.Transform(batched);
                foreach (var c in captures) batched = c.OnForward(name, batched);
                for (int i = 0; i < n; i++)
                {
                    var row = envs[i][name] = Padded.Row(batched, i, parts[i].shape, adds);
                    releases[i]?.Stored(row);   // (not inside the call: ?. would skip the assignment with no releaser)
                }
            }
            for (int i = 0; i < n; i++) releases[i]?.After(position, envs[i]);
        }
        Releaser.Finish(releases);
        var outputs = envs.Select(e => e[_outputName]).ToList();
        var y = Padded.Batch(outputs, addsBatch: _unbatched || Padded.AddsBatch(outputs, false), _source);
        return _flattenOutput && y.dim() > 2 ? y.reshape(y.shape[0], -1) : y;
    }
}
