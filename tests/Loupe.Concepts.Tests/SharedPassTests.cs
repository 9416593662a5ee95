using System.IO.Compression;
using Loupe.Abstractions;
using Loupe.Core;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;

namespace Loupe.Concepts.Tests;

/// <summary>The concept techniques' dataset passes ride the host's shared layer pass: a data source that counts how
/// often it is read shows that prototypes, counterfactual-neighbours and concept-discovery's NMF sample cost one read
/// of the data together, not one each.</summary>
public class SharedPassTests
{
    public sealed record CountedOptions { public string Tag { get; init; } = ""; }

    /// <summary>The planted IDX data, counting every start of a read.</summary>
    public sealed class CountedAdapter : DataAdapter<CountedOptions>
    {
        public static readonly Dictionary<string, int> Reads = [];

        public override IDataSource Open(CountedOptions options, DataOpenContext context) => new Source(options.Tag);

        sealed class Source(string tag) : IDataSource
        {
            static byte[] Unzip(string file)
            {
                using var gz = new GZipStream(File.OpenRead(file), CompressionMode.Decompress);
                using var ms = new MemoryStream();
                gz.CopyTo(ms);
                return ms.ToArray();
            }

            public long? Count => 60;
            public bool Preprocessed => false;
            public IEnumerable<string> Files => [];

            public IEnumerable<DataBatch> Read(InputSpec spec, int batchSize, CancellationToken cancellation)
            {
                lock (Reads) Reads[tag] = Reads.GetValueOrDefault(tag) + 1;
                var images = Unzip(Path.Combine(Env.Planted, "data", "images-idx3-ubyte.gz"));
                var labels = Unzip(Path.Combine(Env.Planted, "data", "labels-idx1-ubyte.gz"));
                for (int s = 0; s < 60; s += batchSize)
                {
                    int n = Math.Min(batchSize, 60 - s);
                    var px = new float[n * 784];
                    for (int i = 0; i < px.Length; i++) px[i] = images[16 + s * 784 + i] / 255f;
                    yield return new DataBatch(Enumerable.Range(s, n).Select(i => i.ToString("D5")).ToArray(), tensor(px, [n, 1, 28, 28]),
                        Enumerable.Range(s, n).Select(i => (long)labels[8 + i]).ToArray());
                }
            }

            public void Dispose() { }
        }
    }

    public sealed class Registrar : IPluginRegistrar
    {
        public void Register(IServiceCollection services) => services.AddLoupeData<CountedAdapter>("counted-planted", "the planted data, counting reads");
    }

    static void RunWith(string tag, string steps)
    {
        var path = Env.PlantedPipeline(steps, batchSize: 20);
        var text = File.ReadAllText(path);
        int start = text.IndexOf("data:", StringComparison.Ordinal), end = text.IndexOf("settings:", StringComparison.Ordinal);
        File.WriteAllText(path, text[..start] + $"data:\n  uses: counted-planted\n  with: {{ tag: {tag} }}\n" + text[end..]);
        var r = PipelineRunner.Run(new RunRequest(path)
        {
            OutDir = Path.Combine(Path.GetDirectoryName(path)!, "out"),
            PluginDirectories = [Env.BuiltInPlugins],
            Registrars = [new Registrar()],
        });
        Assert.True(r.ExitCode == 0, string.Join("\n", r.Errors) + r.Manifest?["steps"]?.ToJsonString());
    }

    [Fact]
    public void EmbeddingAndNmfSampleShareOneReadOfTheData()
    {
        // prototypes alone: the host's own reads (predictions) + its layer pass + one partial read for the tiles.
        RunWith("alone", """
              - { id: proto, uses: prototypes, with: { layer: relu3 } }
            """);
        // concept-discovery's first pass also feeds the embedding of prototypes and counterfactual-neighbours (both
        // relu3): the same shared pass + concept-discovery's gradient pass + one more tile read: 2 more reads than
        // prototypes alone (4 more if each step ran its own dataset pass).
        RunWith("shared", """
              - { id: cd, uses: concept-discovery, with: { layer: relu2, concepts: 3, iterations: 20 } }
              - { id: proto, uses: prototypes, with: { layer: relu3 } }
              - { id: cf, uses: counterfactual-neighbours, with: { layer: relu3 } }
            """);
        Assert.Equal(CountedAdapter.Reads["alone"] + 2, CountedAdapter.Reads["shared"]);
    }

    [Fact]
    public void DissectionThresholdPassRidesAlongWhicheverStepRunsFirst()
    {
        string dis = $"  - {{ id: dis, uses: dissection, with: {{ layer: relu2, masks: {Env.Planted}/masks, quantile: 0.04 }} }}\n";
        const string cd = "  - { id: cd, uses: concept-discovery, with: { layer: relu2, concepts: 3, iterations: 20 } }\n";
        // dissection alone: its threshold pass, its IoU pass (needs the thresholds) and a partial read for units.png.
        RunWith("dis-alone", dis);
        // With concept-discovery first, dissection's planned threshold pass rides along with concept-discovery's NMF
        // sample (one forward per batch for both): the only extra read is concept-discovery's gradient pass, in either
        // order. Unplanned, dissection would re-read the data for its thresholds.
        RunWith("cd-dis", cd + dis);
        RunWith("dis-cd", dis + cd);
        Assert.Equal(CountedAdapter.Reads["dis-alone"] + 1, CountedAdapter.Reads["cd-dis"]);
        Assert.Equal(CountedAdapter.Reads["dis-cd"], CountedAdapter.Reads["cd-dis"]);
    }
}
