using System.Collections;
using Loupe.Abstractions;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Loupe.Models.TorchSharp;

/// <summary>Loads weights into a module from PyTorch <c>torch.save(state_dict)</c> files (zip format),
/// <c>.safetensors</c>, or TorchSharp's own <c>.dat</c> format, and reports every missing, unexpected
/// or mis-shaped tensor by name. Files are validated first (<see cref="WeightsCheck"/>): pickles are walked, never run, and may only
/// rebuild tensors; every declared size is checked against the bytes present before anything is allocated.</summary>
public static class Weights
{
    /// <summary>Largest weights file accepted.</summary>
    public const long MaxBytes = 4L << 30;

    /// <summary>Entries of a checkpoint dict that usually hold the state_dict (Lightning, timm, torchvision and common
    /// training scripts), tried in this order when no <c>weights_key</c> is given.</summary>
    public static readonly string[] CommonKeys = ["state_dict", "model_state_dict", "model", "net", "module"];

    /// <summary>Reads a state dict (name → tensor), from the file itself or from its entry <paramref name="weightsKey"/>
    /// (or a common one: <see cref="CommonKeys"/>). Throws <see cref="LoupeException"/> naming the file.</summary>
    public static Dictionary<string, Tensor> ReadStateDict(string path, string? weightsKey = null)
    {
        if (!File.Exists(path)) throw new LoupeException($"weights file not found: {path}");
        var length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new LoupeException($"{path}: {length} bytes exceeds the weights size limit of {MaxBytes} bytes");
        var ext = Path.GetExtension(path).ToLowerInvariant();
        try
        {
            if (ext == ".safetensors")
            {
                WeightsCheck.Safetensors(path, length);
                return Safetensors.LoadStateDict(path);
            }
            if (ext is ".pt" or ".pth" or ".bin" or ".ckpt")
            {
                CheckZip(path);
                WeightsCheck.PyTorchZip(path, length);
                var table = Select(path, PyTorchUnpickler.UnpickleStateDict(path), weightsKey);
                var dict = new Dictionary<string, Tensor>();
                foreach (DictionaryEntry e in table)
                {
                    if (e.Value is not Tensor t)
                        throw new LoupeException($"{path}: entry '{e.Key}' is a {e.Value?.GetType().Name ?? "null"}, not a tensor; save with torch.save(model.state_dict(), path)");
                    dict[(string)e.Key] = t;
                }
                return dict;
            }
        }
        catch (LoupeException) { throw; }
        catch (Exception e)
        {
            throw new LoupeException($"{path}: cannot read weights ({e.GetType().Name}: {e.Message}). Expected a PyTorch state_dict saved with torch.save(model.state_dict(), path) in the zip format, or a .safetensors file; legacy and whole-model pickles are refused, never executed", e);
        }
        throw new LoupeException($"{path}: unknown weights format '{ext}' (use .pt/.pth, .safetensors or TorchSharp .dat)");
    }

    static void CheckZip(string path)
    {
        Span<byte> head = stackalloc byte[4];
        using var s = File.OpenRead(path);
        if (s.ReadAtLeast(head, 4, false) < 4 || head[0] != (byte)'P' || head[1] != (byte)'K')
            throw new LoupeException($"{path}: not a PyTorch zip checkpoint (legacy pickles and other formats are refused, never executed); re-save with torch.save(model.state_dict(), path) from PyTorch ≥ 1.6");
    }

    /// <summary>The dict that holds the tensors: the file's own, its entry <paramref name="key"/>, or a common entry.</summary>
    static IDictionary Select(string path, IDictionary table, string? key)
    {
        var keys = table.Keys.OfType<object>().Select(k => k.ToString() ?? "").ToList();
        string Listed() => string.Join(", ", keys.Take(12)) + (keys.Count > 12 ? ", ..." : "");
        if (key is not null)
        {
            if (!table.Contains(key)) throw new LoupeException($"{path}: weights_key '{key}' is not in the checkpoint{Suggest.DidYouMean(key, keys)}; its entries: {Listed()}");
            return table[key] as IDictionary ?? throw new LoupeException($"{path}: entry '{key}' is a {table[key]?.GetType().Name ?? "null"}, not a dict of tensors");
        }
        if (table.Values.OfType<object>().All(v => v is Tensor)) return table;
        foreach (var k in CommonKeys)
            if (table.Contains(k) && table[k] is IDictionary d && d.Values.OfType<object>().Any(v => v is Tensor)) return d;
        throw new LoupeException($"{path}: the file is a checkpoint, not a state_dict, and none of its entries ({Listed()}) is a common one ({string.Join(", ", CommonKeys)}); set weights_key to the entry that holds the state_dict");
    }

    /// <summary>Loads weights into <paramref name="module"/>; strict by name and shape. <paramref name="weightsKey"/>
    /// picks the state_dict inside a checkpoint dict; <paramref name="stripPrefix"/> is removed from every name.</summary>
    public static void Load(nn.Module module, string path, string? weightsKey = null, string? stripPrefix = null)
    {
        if (Path.GetExtension(path).Equals(".dat", StringComparison.OrdinalIgnoreCase))
        {
            try { module.load(path, strict: true); }
            catch (Exception e) { throw new LoupeException($"{path}: cannot load TorchSharp weights: {e.Message}", e); }
            CheckLoaded(module, path);
            return;
        }
        var source = ReadStateDict(path, weightsKey);
        try
        {
            if (stripPrefix is { Length: > 0 })
            {
                if (!source.Keys.Any(k => k.StartsWith(stripPrefix, StringComparison.Ordinal)))
                    throw new LoupeException($"{path}: strip_prefix '{stripPrefix}' starts no parameter name (e.g. {string.Join(", ", source.Keys.Take(3))})");
                source = source.ToDictionary(kv => kv.Key.StartsWith(stripPrefix, StringComparison.Ordinal) ? kv.Key[stripPrefix.Length..] : kv.Key, kv => kv.Value);
            }
            // Checkpoints saved from DataParallel prefix every name with "module.".
            if (source.Count > 0 && source.Keys.All(k => k.StartsWith("module.", StringComparison.Ordinal)))
                source = source.ToDictionary(kv => kv.Key["module.".Length..], kv => kv.Value);
            var target = module.state_dict();
            var missing = target.Keys.Where(k => !source.ContainsKey(k)).ToList();
            var unexpected = source.Keys.Where(k => !target.ContainsKey(k)).ToList();
            var mismatched = target.Keys.Where(source.ContainsKey)
                .Where(k => !target[k].shape.SequenceEqual(source[k].shape))
                .Select(k => $"{k}: file has ({string.Join("×", source[k].shape)}), model expects ({string.Join("×", target[k].shape)})").ToList();
            if (missing.Count + unexpected.Count + mismatched.Count > 0)
            {
                static string List(string what, List<string> items) => items.Count == 0 ? "" :
                    $"\n  {what} ({items.Count}): {string.Join(", ", items.Take(8))}{(items.Count > 8 ? ", ..." : "")}";
                throw new LoupeException($"{path}: weights do not fit this architecture:" + List("shape mismatch", mismatched) + List("missing", missing) + List("unexpected", unexpected)
                    + (stripPrefix is null && unexpected.Count > 0 && unexpected.Select(k => k.Split('.')[0]).Distinct().Count() == 1 ? $"\n  every unexpected name starts with '{unexpected[0].Split('.')[0]}.': set strip_prefix: '{unexpected[0].Split('.')[0]}.'" : ""));
            }
            using var _ = no_grad();
            foreach (var (k, t) in target)
                t.copy_(source[k].to(t.dtype));
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
        CheckLoaded(module, path);
    }

    /// <summary>Asks every submodule that derives buffers from its own shape (<see cref="IChecksLoadedWeights"/>) to
    /// check what the file gave it.</summary>
    static void CheckLoaded(nn.Module module, string path)
    {
        foreach (var (name, m) in module.named_modules())
            if (m is IChecksLoadedWeights c) c.CheckLoaded(path, name);
    }
}

/// <summary>A module with buffers that follow from its configuration (a window's relative position index) and that a
/// weights file still carries: loaded values that differ would index out of range or silently scramble the model.</summary>
public interface IChecksLoadedWeights
{
    /// <summary>Throws a <see cref="LoupeException"/> naming <paramref name="path"/> and the module
    /// <paramref name="name"/> when a loaded buffer differs from the one the configuration defines.</summary>
    void CheckLoaded(string path, string name);
}
