using System.Diagnostics;
using Loupe.Abstractions;
using static TorchSharp.torch;

namespace Loupe.Benchmarks;

/// <summary><c>--metric-survey [SIDE] [N] [ROUNDS] [id ...]</c>: every evaluation metric that runs the model, with its default
/// options, on resnet18 (random weights) and N inputs of 3×SIDE×SIDE (defaults 224, 8, 3), against the passes it
/// made (issue 22: a metric's time ≤ 1.2× the forward passes it needs). The model is wrapped to record each forward's
/// input shape and whether gradients flow from it; the floor replays those passes (a forward of a random input of each
/// shape, and a backward to the input where gradients flowed). Each line also gives the time the metric spent inside the
/// model's forward calls, so its own overhead reads directly. Metric call and replay alternate, medians of ROUNDS; the
/// saliency map the metric evaluates is made inside its call (no map cache), so both sides hold its gradient pass.
/// Arguments Name=VALUE set an integer option of every metric that has it (e.g. Samples=16). Metrics that need more
/// than a model with layer interventions (parameter access, masks) print why they did not run. The word <c>blocks</c>
/// makes the inputs piecewise constant (16×16 tiles of one random colour each, plus noise of σ 0.05) instead of white
/// noise, so that segmenting metrics (irof) meet images with ~100 superpixels, as photographs give them, not the single
/// segment SLIC leaves of white noise.</summary>
public static class MetricSurvey
{
    /// <summary>Runs the survey and prints one line per metric.</summary>
    public static int Run(string[] args)
    {
        Bench.Init();
        var numbers = args.TakeWhile(a => int.TryParse(a, out _)).Select(int.Parse).ToArray();
        int side = numbers.Length > 0 ? numbers[0] : 224, n = numbers.Length > 1 ? numbers[1] : 8, rounds = numbers.Length > 2 ? numbers[2] : 3;
        bool blocks = args.Contains("blocks");
        var only = args.Skip(numbers.Length).Where(a => !a.Contains('=') && a != "blocks").ToHashSet();
        var set = args.Where(a => a.Contains('=')).Select(a => a.Split('=')).ToDictionary(a => a[0], a => int.Parse(a[1], System.Globalization.CultureInfo.InvariantCulture));
        using var inner = Bench.Resnet18();
        var model = new RecordingModel(inner);
        manual_seed(0);
        var x = blocks
            ? randn(n, 3, (side + 15) / 16, (side + 15) / 16).repeat_interleave(16, 2).repeat_interleave(16, 3).narrow(2, 0, side).narrow(3, 0, side) + 0.05 * randn(n, 3, side, side)
            : randn(n, 3, side, side);
        var ctx = new BenchContext(model, Bench.TopOne(1000), x);
        var link = Bench.SaliencyStep(ctx);
        var metrics = typeof(Loupe.Analysis.Evaluation.Road).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(IAnalysis).IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null)
            .OrderBy(t => t.Name).ToArray();
        Console.WriteLine($"resnet18, {n} {(blocks ? "blocky" : "white-noise")} inputs of 3×{side}×{side}, medians of {rounds} alternated rounds");
        foreach (var type in metrics)
        {
            if (only.Count > 0 && !only.Contains(type.Name)) continue;
            var metric = (IAnalysis)Activator.CreateInstance(type)!;
            var options = Activator.CreateInstance(metric.OptionsType)!;
            var of = metric.OptionsType.GetProperty("Of");
            if (of is null) continue;
            of.SetValue(options, link);
            foreach (var (name, value) in set)
                if (metric.OptionsType.GetProperty(name) is { } p && (p.PropertyType == typeof(int) || p.PropertyType == typeof(int?))) p.SetValue(options, value);
            try
            {
                model.Calls.Clear();
                Call(metric, options, ctx);   // warm-up; records the passes
                if (model.Calls.Count == 0) { Console.WriteLine($"{type.Name}: no forward pass"); continue; }
                var passes = model.Calls.ToArray();
                var (m, f, inside) = (new List<double>(), new List<double>(), new List<double>());
                for (int r = 0; r < rounds; r++)
                {
                    model.InForward.Reset();
                    var sw = Stopwatch.StartNew();
                    Call(metric, options, ctx);
                    m.Add(sw.Elapsed.TotalMilliseconds);
                    inside.Add(model.InForward.Elapsed.TotalMilliseconds);
                    sw.Restart();
                    Replay(inner, passes);
                    f.Add(sw.Elapsed.TotalMilliseconds);
                }
                double mm = Median(m), fm = Median(f);
                Console.WriteLine($"{type.Name}: {mm:F0} ms, its passes {fm:F0} ms ({passes.Count(p => !p.Gradients)} forwards of {passes.Where(p => !p.Gradients).Sum(p => p.Shape[0])} copies, {passes.Count(p => p.Gradients)} with gradients of {passes.Where(p => p.Gradients).Sum(p => p.Shape[0])}), ratio {mm / fm:F2}; forward calls inside the metric {Median(inside):F0} ms");
            }
            catch (Exception e)
            {
                Console.WriteLine($"{type.Name}: did not run ({e.GetType().Name}: {e.Message.Split('\n')[0]})");
            }
        }
        return 0;
    }

    static void Call(IAnalysis metric, object options, BenchContext ctx)
    {
        using var scope = NewDisposeScope();
        metric.Run(options, ctx);
    }

    static double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);

    static void Replay(IModel model, (long[] Shape, bool Gradients)[] passes)
    {
        foreach (var (shape, gradients) in passes)
        {
            using var scope = NewDisposeScope();
            var input = randn(shape);
            if (gradients)
            {
                input.requires_grad_(true);
                var y = model.Forward(input);
                Loupe.Abstractions.Toolkit.CheckedOps.Grad([y.max(1).values.sum()], [input]);
            }
            else
                using (no_grad()) model.Forward(input);
        }
    }

    /// <summary>A model that records each forward's input shape and whether its output carries gradients.</summary>
    sealed class RecordingModel(IModel inner) : IModel, IModelInterventions
    {
        public List<(long[] Shape, bool Gradients)> Calls { get; } = [];
        public ModelCapabilities Capabilities => inner.Capabilities;
        public InputSpec DefaultInput => inner.DefaultInput;
        public IReadOnlyList<string>? DefaultLabels => inner.DefaultLabels;
        public IReadOnlyList<LayerInfo> Layers => inner.Layers;
        /// <summary>Time spent in the inner model's forward calls (without the gradient passes that follow them).</summary>
        public Stopwatch InForward { get; } = new();
        public Tensor Forward(Tensor input)
        {
            InForward.Start();
            var y = inner.Forward(input);
            InForward.Stop();
            Calls.Add((input.shape, y.requires_grad));
            return y;
        }
        public ILayerCapture Capture(IReadOnlyCollection<string> layers, bool forGradients) => inner.Capture(layers, forGradients);
        public Tensor? GetParameter(string name) => inner.GetParameter(name);
        public IReadOnlyList<string> ParameterNames => inner.ParameterNames;
        public void Dispose() { }
        IModelInterventions Interventions => inner as IModelInterventions ?? throw new LoupeException("the model does not support interventions");
        public IDisposable Intervene(string layer, Func<Tensor, Tensor> transform) => Interventions.Intervene(layer, transform);
        public IDisposable OverrideRelu(ReluRule rule) => Interventions.OverrideRelu(rule);
        public IDisposable OverrideRelu(ReluRule rule, double beta) => Interventions.OverrideRelu(rule, beta);
    }
}
