using System.Runtime.InteropServices;
using Loupe.Abstractions;

namespace Loupe.Models.Onnx;

/// <summary>Makes sure ONNX Runtime's native library is found when this plugin is loaded from its folder.
/// Microsoft.ML.OnnxRuntime 1.31 installs its own DllImport resolver (a second one cannot be set), and the host's
/// plugin load context resolves native assets from this plugin's .deps.json; as a fallback for hosts that do
/// neither, the library is loaded once from <c>runtimes/&lt;rid&gt;/native</c> beside this assembly, so a later
/// lookup by name finds the already-loaded library.</summary>
static class OrtNative
{
    static readonly object Gate = new();
    static bool _done;

    public static void EnsureResolver()
    {
        lock (Gate)
        {
            if (_done) return;
            _done = true;
            var dir = Path.GetDirectoryName(typeof(OrtNative).Assembly.Location);
            if (string.IsNullOrEmpty(dir)) return;
            var file = OperatingSystem.IsWindows() ? "onnxruntime.dll" : OperatingSystem.IsMacOS() ? "libonnxruntime.dylib" : "libonnxruntime.so";
            var candidates = new[]
            {
                Path.Combine(dir, file),
                Path.Combine(dir, "runtimes", RuntimeInformation.RuntimeIdentifier, "native", file),
                Path.Combine(dir, "runtimes", $"{(OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux")}-{RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant()}", "native", file),
            };
            var found = candidates.FirstOrDefault(File.Exists);
            if (found is not null && !NativeLibrary.TryLoad(found, out _))
                throw new LoupeException($"ONNX Runtime's native library {found} could not be loaded");
        }
    }
}
