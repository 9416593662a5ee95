using Loupe.Abstractions;
using Loupe.Core;
using Loupe.Data;
using Loupe.Models.Onnx;
using Loupe.Models.TorchSharp;
using static TorchSharp.torch;
using Loupe.Abstractions.Toolkit;

namespace Loupe.Fuzz;

/// <summary>One reader under test: where its seeds come from, the extension its files need, the tokens worth
/// inserting, and the call that reads a file exactly as a pipeline would.</summary>
sealed record Target(string Name, string Extension, string[] SeedGlobs, string[] Dictionary, Action<string> Read)
{
    /// <summary>Turns a seed file into a seed input (default: its bytes; null skips the file).</summary>
    public Func<string, byte[]?> Seed { get; init; } = File.ReadAllBytes;
}

static class Targets
{
    static readonly InputSpec Grey28 = new(1, 28, 28, [0f], [1f]);
    static readonly InputSpec Rgb32 = new(3, 32, 32, [0f, 0f, 0f], [1f, 1f, 1f]);
    static FashionCnn? _module;

    static readonly string[] OnnxSeeds = ["tests/fixtures/onnx/ops/*.onnx", "tests/fixtures/onnx/ops-detection/*.onnx", "tests/fixtures/onnx/ops-newer/*.onnx", "tests/fixtures/onnx/ops-contrib/*.onnx", "tests/fixtures/onnx/ops-quant/*.onnx", "tests/fixtures/onnx/ops-qop/*.onnx", "tests/fixtures/onnx/unbatched/*.onnx", "tests/fixtures/detseg/torchvision/fasterrcnn.onnx", "tests/fixtures/onnx/bad/*.onnx", "tests/corpus/onnx/*"];

    static readonly string[] OnnxTokens =
        ["If", "RoiAlign", "NonMaxSuppression", "TopK", "GatherND", "ScatterElements", "then_branch", "\u0008\u0007", "\u0008\u00ff\u00ff\u00ff\u00ff\u000f", "Conv", "Gemm", "Reshape", "ConstantOfShape", "Expand", "Tile", "Resize", "\u0012\u0004", "\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u00ff\u007f",
             // issue 26: external data (location, offset, length), links out of the folder, control characters in names
             "location", "offset", "length", "99999999999999999999", "-5", "12abc", "../", "/etc/passwd", "linked/passwd", "/dev/zero", "\u001b]0;x\u0007", "Pad",
             // ONNX Runtime's fused operators (expanded at load)
             "com.microsoft", "FusedConv", "activation", "activation_params", "SkipLayerNormalization", "_output_0", "QuantizeLinear", "DequantizeLinear",
             // the QOperator form (rewritten into QDQ at load)
             "QLinearConv", "QGemm", "QLinearConcat", "QLinearAdd", "channels_last", "MaxPool"];

    public static readonly Target[] All =
    [
        new("yaml", ".yaml", ["configs/*.yaml", "tests/corpus/yaml/*"],
            ["&a ", "*a", "<<: *a", "[", "]", "{", "}", "- ", ": ", "\t", "!!str ", "!!binary ", "'", "\"", "---\n", "...\n", "%YAML 1.2\n",
             "~", "? ", "|\n", ">-\n", "\\u0000", "version: 1\n", "steps:\n", "  - id: a\n    uses: grad-cam\n", "with: ", "model:\n", "settings: { batch_size: 99999999999 }\n",
             "memory_budget_mb: -1", "999999999999999999999", "1e309", "\n  ", "#", "!",
             // issue 26: overflowing durations, NUL and escapes in strings, system output folders, devices as files
             "timeout: 99999999999999999999h", "step_timeout: 1e300s", "\"\\0\"", "\"\\e[2J\"", "id: \"a\\n\"", "output: { dir: /etc }", "labels: /dev/zero", "threads: 100000", "input: { size: [100000, 100000] }"],
            path =>
            {
                var spec = PipelineParser.Parse(path);
                // The manifest serialises the resolved pipeline: aliases must not blow it up.
                _ = Manifest.FromYaml(spec.Root)?.ToJsonString();
            }),
        new("safetensors", ".safetensors", ["tests/fixtures/*.safetensors", "samples/models/*/*.safetensors", "tests/corpus/safetensors/*"],
            ["{\"", "\"dtype\":\"F32\"", "\"dtype\":\"F64\"", "\"shape\":[", "\"data_offsets\":[", "18446744073709551615", "-1", "4294967296", "]", "}", "\"__metadata__\":{}", "null", "[[[[[[[["],
            path => LoadWeights(path)),
        new("pt", ".pt", ["tests/fixtures/*.pt", "tests/corpus/pt/*"],
            ["PK\u0003\u0004", "PK\u0001\u0002", "PK\u0005\u0006", "\u0080\u0002", "c__builtin__\neval\n", "cos\nsystem\n", "ctorch._utils\n_rebuild_tensor_v2\n", "R", ".", "q\u0000", "X\u0004\u0000\u0000\u0000", "J\u00ff\u00ff\u00ff\u007f", "data.pkl", "archive/data/0"],
            path => LoadWeights(path)),
        // Structure-aware: the input is data.pkl alone, zipped with the fixture's storages before loading, so
        // mutations reach the pickle walker instead of dying on zip checksums.
        new("pickle", ".pkl", ["tests/fixtures/*.pt", "tests/corpus/pt/*.pt"],
            ["\u0080\u0002", "c__builtin__\neval\n", "cposix\nsystem\n", "ctorch\nFloatStorage\n", "ctorch._utils\n_rebuild_tensor_v2\n", "ccollections\nOrderedDict\n",
             "(", "t", "R", "Q", "b", "u", "s", "e", "}", "]", ")", "q\u0000", "h\u0000", "J\u00ff\u00ff\u00ff\u007f", "K\u0004", "X\u0001\u0000\u0000\u00000", "\u0085", "\u0086", "\u0093", "\u0094", "\u008c\u0005torch", "."],
            path =>
            {
                var zip = path + ".pt";
                WritePickleZip(path, zip);
                try { LoadWeights(zip); }
                finally { File.Delete(zip); }
            }) { Seed = PickleOf },
        new("npy", ".npy", ["tests/fixtures/fashion_input.npy", "tests/fixtures/fashion_logits.npy", "tests/corpus/npy/*", "tests/fixtures/npy_dtypes/*.npy"],
            ["\u0093NUMPY", "'descr': '<f4'", "'descr': '<f8'", "'descr': '>i8'", "'descr': '<f2'", "'descr': '|b1'", "'descr': '|O'", "'fortran_order': True", "'shape': (", "9223372036854775807", "-1", ",)", "()", "{", "}", "\n"],
            path =>
            {
                try
                {
                    var rows = Npy.Rows.Open(path, 1 << 20);
                    if (rows.Count > 0) _ = rows.ReadRows([rows.Count - 1, 0]);
                }
                catch (LoupeException) { }
                _ = Npy.Read(path);
                using var source = new NpyDataAdapter().Open(new NpyDataOptions { Path = path }, new DataOpenContext(Path.GetDirectoryName(path)!, Grey28));
                foreach (var b in source.Read(Grey28, 16, default)) b.Dispose();
            }),
        new("onnx", ".onnx", OnnxSeeds, OnnxTokens,
            path =>
            {
                var file = OnnxFile.Load(path, 64L << 20);
                using var model = OnnxModel.Create(file, new OnnxOptions { Path = path });
                using var scope = NewDisposeScope();
                var i = model.DefaultInput;
                if ((long)i.Channels * i.Height * i.Width <= 1 << 16)
                {
                    // A forward, then the input gradient every gradient technique takes (custom autograd functions included);
                    // two different images, so an unbatched graph's outputs are padded into one batch.
                    var x = cat([zeros(1, i.Channels, i.Height, i.Width), full(1, i.Channels, i.Height, i.Width, 0.5f)]).requires_grad_(true);
                    // Without gradients first: that forward frees each value after its last reader (OnnxModel.Release.cs).
                    using (no_grad()) model.Forward(x.detach());
                    var y = model.Forward(x);
                    if (y.is_floating_point() && y.requires_grad) _ = CheckedOps.Grad([y.sum()], [x], allowUnused: true);
                    Loupe.Abstractions.Toolkit.BackwardErrors.ThrowIfAny();
                }
            }),
        // The same files through ONNX Runtime (the onnx-runtime backend): its kernels see whatever OrtGuard and the
        // contrib-operator refusal let through; a native crash ends the process and run-all.sh keeps the input.
        new("onnx-runtime", ".onnx", OnnxSeeds, OnnxTokens,
            path =>
            {
                var file = OnnxFile.Load(path, 64L << 20);
                using var model = OrtModel.Create(file, new OnnxOptions { Path = path, RunTimeoutS = 2 });
                using var scope = NewDisposeScope();
                var i = model.DefaultInput;
                if ((long)i.Channels * i.Height * i.Width <= 1 << 16)
                    _ = model.Forward(cat([zeros(1, i.Channels, i.Height, i.Width), full(1, i.Channels, i.Height, i.Width, 0.5f)]));
            }),
        new("idx", ".idx", ["samples/data/fashion-mnist/*", "tests/corpus/idx/*"],
            ["\u0000\u0000\u0008\u0003", "\u0000\u0000\u0008\u0001", "\u007f\u00ff\u00ff\u00ff", "\u0080\u0000\u0000\u0000", "\u0000\u0000\u0000\u001c", "\u001f\u008b\u0008"],
            path =>
            {
                using var source = new IdxAdapter().Open(new IdxOptions { Images = path, Limit = 64 }, new DataOpenContext(Path.GetDirectoryName(path)!, Grey28));
                foreach (var b in source.Read(Grey28, 16, default)) b.Dispose();
            }),
        new("image", ".png", ["samples/images/fashion/*.png", "tests/corpus/images/*"],
            ["\u0089PNG\r\n\u001a\n", "IHDR", "IDAT", "IEND", "PLTE", "tRNS", "zTXt", "iTXt", "tEXt", "\u00ff\u00d9", "\u00ff\u00da", "\u00ff\u00d8\u00ff", "GIF89a", "BM", "RIFF", "WEBP", "II*\u0000", "\u0000\u0001\u0086\u00a0"],
            path =>
            {
                if (ImageDecoding.Check(path, 4L << 20) is { } problem) throw new LoupeException($"{path}: {problem}");
                _ = ImageDecoding.Load(path, Rgb32, 4L << 20);
            }),
        // Issue 26: manifests of shard and run folders from elsewhere, read by 'loupe merge' and 'loupe report': the
        // input is the manifest of a one-shard run folder (paths inside it must stay inside; nothing may load code).
        new("manifest", ".json", ["tools/Loupe.Fuzz/seeds/*.json"],
            ["\"path\": \"../", "\"path\": \"/etc/passwd\"", "\"id\": \"../x\"", "\"plugins\": [", "{\"path\": \"x\", \"sha256\": \"", "\"shard\": {", "\"count\": 1", "\"index\": 0",
             "\"status\": \"succeeded\"", "\"artifacts\": [", "null", "[[[[[[[[", "\"\\u0000\"", "\"\\u001b[2J\"", "9223372036854775807", "-1"],
            path =>
            {
                var run = Path.Combine(Path.GetDirectoryName(path)!, "run-" + Guid.NewGuid().ToString("N"));
                Directory.CreateDirectory(Path.Combine(run, "sal"));
                File.Copy(path, Path.Combine(run, "manifest.json"));
                try
                {
                    // The input was copied to <run>/manifest.json: refusals are re-raised naming the input.
                    try { _ = Loupe.Core.Report.RunFolder.Open(run); }
                    catch (LoupeException e) { throw new LoupeException($"{path}: {e.Message}"); }
                    var r = ShardMerger.Merge(new MergeRequest([run], run + "-merged") { PluginDirectories = [] });
                    if (r.Errors.Count > 0) throw new LoupeException($"{path}: {r.Errors[0]}");
                }
                finally { Directory.Delete(run, true); if (Directory.Exists(run + "-merged")) Directory.Delete(run + "-merged", true); }
            }),
    ];

    static byte[]? PickleOf(string ptFile)
    {
        try
        {
            using var z = System.IO.Compression.ZipFile.OpenRead(ptFile);
            var e = z.Entries.FirstOrDefault(x => x.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
            if (e is null || e.Length > 1 << 20) return null;
            using var s = e.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            return ms.ToArray();
        }
        catch (InvalidDataException) { return null; }
    }

    static readonly Lazy<(string Name, byte[] Data)[]> Storages = new(() =>
    {
        using var z = System.IO.Compression.ZipFile.OpenRead(Path.Combine(Repo.Root, "tests/fixtures/fashion_cnn_seed0.pt"));
        return z.Entries.Where(e => !e.FullName.EndsWith("data.pkl", StringComparison.Ordinal)).Select(e =>
        {
            using var s = e.Open();
            var ms = new MemoryStream();
            s.CopyTo(ms);
            return (e.FullName, ms.ToArray());
        }).ToArray();
    });

    static void WritePickleZip(string pickle, string zip)
    {
        using var fs = File.Create(zip);
        using var z = new System.IO.Compression.ZipArchive(fs, System.IO.Compression.ZipArchiveMode.Create);
        using (var s = z.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.NoCompression).Open()) s.Write(File.ReadAllBytes(pickle));
        foreach (var (name, data) in Storages.Value)
            using (var s = z.CreateEntry(name, System.IO.Compression.CompressionLevel.NoCompression).Open()) s.Write(data);
    }

    static void LoadWeights(string path)
    {
        _module ??= new FashionCnn(10);
        Weights.Load(_module, path);
    }
}
