using System.Runtime.InteropServices;

namespace Loupe.Abstractions.Toolkit;

/// <summary>libtorch settings Loupe makes before a model's first convolution (<see cref="Configure"/>, called by the
/// backends when they load a model).
/// <para>On Linux x86-64 machines whose kernel lists no processor caches (<c>/sys/devices/system/cpu/cpu0/cache</c>
/// absent, as in virtual machines that hide the cache leaves), libtorch's oneDNN ("mkldnn") convolutions and NNPACK
/// are switched off, so that convolutions run on ATen's own kernels: on such a machine (AMD EPYC with AVX-512,
/// 2026-12-05) oneDNN gave wrong numbers — resnet18's logits 13 % (relative L2) from PyTorch's, a grouped dilated
/// convolution 97 % from ONNX Runtime's, first-layer input gradients unrelated to the direct computation — at its
/// AVX-512 and AVX2 levels, and a SmoothGrad 0.4 % off at SSE4.1; NNPACK failed to start ("Unsupported hardware") and
/// said so on stderr. oneDNN and NNPACK size their kernels from the processor's cache description; without one they
/// are not to be trusted. <c>LOUPE_ONEDNN=keep</c> in the environment leaves both as libtorch sets them.</para></summary>
public static class TorchNative
{
    static readonly Lazy<bool> Applied = new(Apply, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Whether this process switched oneDNN and NNPACK off (see the class comment).</summary>
    public static bool Configure() => Applied.Value;

    /// <summary>Whether this machine needs the switch: Linux x86-64 with no cache description, not overridden.</summary>
    public static bool CacheDescriptionMissing() =>
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64
        && !Directory.Exists("/sys/devices/system/cpu/cpu0/cache")
        && Environment.GetEnvironmentVariable("LOUPE_ONEDNN") != "keep";

    static unsafe bool Apply()
    {
        if (!CacheDescriptionMissing()) return false;
        try
        {
            _ = TorchSharp.torch.get_num_threads();   // libtorch is loaded
            // The libtorch_cpu this process loaded (from its mappings: the same instance, not a second copy).
            var path = File.ReadLines("/proc/self/maps").Select(line => line.IndexOf('/') is var slash and >= 0 ? line[slash..] : null)
                .OfType<string>().FirstOrDefault(f => Path.GetFileName(f).StartsWith("libtorch_cpu", StringComparison.Ordinal));
            if (path is null || !NativeLibrary.TryLoad(path, out var lib)) return false;
            if (!NativeLibrary.TryGetExport(lib, "_ZN2at13globalContextEv", out var global)
                || !NativeLibrary.TryGetExport(lib, "_ZN2at7Context20setUserEnabledMkldnnEb", out var mkldnn)
                || !NativeLibrary.TryGetExport(lib, "_ZN2at7Context20setUserEnabledNNPACKEb", out var nnpack))
                return false;
            nint context = ((delegate* unmanaged<nint>)global)();
            ((delegate* unmanaged<nint, byte, void>)mkldnn)(context, 0);   // at::Context::setUserEnabledMkldnn(false)
            ((delegate* unmanaged<nint, byte, void>)nnpack)(context, 0);   // at::Context::setUserEnabledNNPACK(false)
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }
}
