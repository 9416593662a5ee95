using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Loupe.Abstractions;

/// <summary>Caps libtorch's oneDNN at SSE4.1 on Linux machines whose kernel lists no processor caches
/// (/sys/devices/system/cpu/cpu0/cache absent, as in virtual machines that hide the cache leaves), unless the user chose
/// an ISA (DNNL_MAX_CPU_ISA or ONEDNN_MAX_CPU_ISA in the environment).
/// <para>Why: on such a machine (AMD EPYC with AVX-512, 2026-12-05) libtorch's oneDNN convolutions gave wrong numbers —
/// resnet18's logits 13 % (relative L2) from PyTorch's, a grouped dilated convolution 97 % from ONNX Runtime's, first-layer
/// input gradients unrelated to the direct computation — with its AVX-512 kernels and, for one case, its AVX2 ones;
/// capped at SSE4.1 every one of them matched again (tests/Loupe.Tests FastKernelTests, BatchNormFoldingTests). oneDNN sizes
/// its kernels' blocking from the processor's cache description; without one they are not to be trusted. The cap is set
/// in the native environment when this assembly is first used, before any convolution runs (oneDNN reads it once, at its
/// first primitive).</para></summary>
static class OneDnnGuard
{
    [DllImport("libc", EntryPoint = "setenv")]
    static extern int SetEnv(string name, string value, int overwrite);

    [DllImport("libc", EntryPoint = "getenv")]
    static extern IntPtr GetEnv(string name);

    /// <summary>Whether the cap was set by this process.</summary>
    public static bool Capped { get; private set; }

    [ModuleInitializer]
    internal static void Apply()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return;
            if (Directory.Exists("/sys/devices/system/cpu/cpu0/cache")) return;
            if (GetEnv("DNNL_MAX_CPU_ISA") != IntPtr.Zero || GetEnv("ONEDNN_MAX_CPU_ISA") != IntPtr.Zero) return;
            Capped = SetEnv("DNNL_MAX_CPU_ISA", "SSE41", 0) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // No libc to set it through: leave oneDNN as it is.
        }
    }
}
