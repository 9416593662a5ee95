// Loupe native compatibility step for TorchSharp on older Linux distributions.
//
// TorchSharp 0.107's libLibTorchSharp.so asks for GLIBCXX_3.4.32 for exactly one symbol,
// _ZSt21ios_base_library_initv, which GCC 13 emits to force iostream initialisation (older
// libstdc++ initialises iostreams by itself). On a system whose libstdc++ lacks that version
// (Debian 12, Ubuntu 22.04) the library fails to load. We fix the *copy in the build output*,
// never a system library: (1) mark the GLIBCXX_3.4.32 requirement weak (VER_FLG_WEAK) in
// .gnu.version_r, (2) add a one-symbol shim library as DT_NEEDED (patchelf), placed beside it.
//
// This file is compiled twice: as an MSBuild inline task (build/Loupe.NativeCompat.targets)
// and, with LOUPE_NATIVECOMPAT_TESTS defined, into the test project, which tests the ELF logic.
#nullable enable
using System;
using System.IO;
using System.Text;

namespace Loupe.Build
{
    public static class ElfCompat
    {
        public const string MissingVersion = "GLIBCXX_3.4.32";
        public const string ShimName = "libloupe_glibcxx_shim.so";
        public const string ShimSymbol = "_ZSt21ios_base_library_initv";
        const ushort VerFlgWeak = 0x2;
        const uint ShtGnuVerneed = 0x6ffffffe;

        /// <summary>True when a libstdc++ file exports the given version tag.</summary>
        public static bool LibraryHasVersion(string libstdcxxPath, string version)
        {
            var needle = Encoding.ASCII.GetBytes(version + "\0");
            var bytes = File.ReadAllBytes(libstdcxxPath);
            return IndexOf(bytes, needle, 0) >= 0;
        }

        /// <summary>The system libstdc++ that the dynamic loader would pick, or null when none is found.</summary>
        public static string? FindSystemLibStdCxx()
        {
            string[] candidates =
            {
                "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
                "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            };
            foreach (var c in candidates) if (File.Exists(c)) return c;
            return null;
        }

        /// <summary>Whether <paramref name="elfPath"/> requires <paramref name="version"/> and, if so, whether it is weak already.</summary>
        public static (bool Requires, bool Weak) InspectVersionNeed(string elfPath, string version)
        {
            var bytes = File.ReadAllBytes(elfPath);
            var off = FindVernaux(bytes, version);
            if (off < 0) return (false, false);
            return (true, (BitConverter.ToUInt16(bytes, off + 4) & VerFlgWeak) != 0);
        }

        /// <summary>Sets VER_FLG_WEAK on the vernaux entry naming <paramref name="version"/>. Returns false if absent.</summary>
        public static bool MakeVersionWeak(string elfPath, string version)
        {
            var bytes = File.ReadAllBytes(elfPath);
            var off = FindVernaux(bytes, version);
            if (off < 0) return false;
            var flags = (ushort)(BitConverter.ToUInt16(bytes, off + 4) | VerFlgWeak);
            using (var fs = new FileStream(elfPath, FileMode.Open, FileAccess.Write))
            {
                fs.Position = off + 4;
                fs.Write(BitConverter.GetBytes(flags), 0, 2);
            }
            return true;
        }

        /// <summary>True when the file's dynamic string table mentions the shim (so DT_NEEDED was added).</summary>
        public static bool MentionsShim(string elfPath) =>
            IndexOf(File.ReadAllBytes(elfPath), Encoding.ASCII.GetBytes(ShimName + "\0"), 0) >= 0;

        // Returns the file offset of the Elf64_Vernaux whose name is `version`, or -1.
        static int FindVernaux(byte[] b, string version)
        {
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
                throw new InvalidDataException("not an ELF file");
            if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("only little-endian ELF64 is supported");
            long shoff = BitConverter.ToInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
            for (int i = 0; i < shnum; i++)
            {
                int sh = checked((int)(shoff + (long)i * shentsize));
                if (BitConverter.ToUInt32(b, sh + 4) != ShtGnuVerneed) continue;
                long secOff = BitConverter.ToInt64(b, sh + 0x18);
                uint link = BitConverter.ToUInt32(b, sh + 0x28), count = BitConverter.ToUInt32(b, sh + 0x2C);
                int strSh = checked((int)(shoff + (long)link * shentsize));
                long strOff = BitConverter.ToInt64(b, strSh + 0x18);
                long vn = secOff;
                for (uint e = 0; e < count; e++)
                {
                    int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                    long aux = vn + BitConverter.ToUInt32(b, (int)vn + 8);
                    for (int a = 0; a < cnt; a++)
                    {
                        uint name = BitConverter.ToUInt32(b, (int)aux + 8);
                        if (ReadCString(b, (int)(strOff + name)) == version) return (int)aux;
                        uint next = BitConverter.ToUInt32(b, (int)aux + 12);
                        if (next == 0) break;
                        aux += next;
                    }
                    uint vnext = BitConverter.ToUInt32(b, (int)vn + 12);
                    if (vnext == 0) break;
                    vn += vnext;
                }
            }
            return -1;
        }

        static string ReadCString(byte[] b, int start)
        {
            int end = start;
            while (end < b.Length && b[end] != 0) end++;
            return Encoding.ASCII.GetString(b, start, end - start);
        }

        static int IndexOf(byte[] hay, byte[] needle, int from)
        {
            for (int i = from; i <= hay.Length - needle.Length; i++)
            {
                if (hay[i] != needle[0]) continue;
                int j = 1;
                while (j < needle.Length && hay[i + j] == needle[j]) j++;
                if (j == needle.Length) return i;
            }
            return -1;
        }
    }

#if !LOUPE_NATIVECOMPAT_TESTS
    /// <summary>MSBuild task: patch every libLibTorchSharp.so under OutputDir when the system needs it.</summary>
    public class LoupeTorchSharpCompat : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required] public string OutputDir { get; set; } = "";
        [Microsoft.Build.Framework.Required] public string IntermediateDir { get; set; } = "";

        public override bool Execute()
        {
            if (!System.Runtime.InteropServices.RuntimeInformation.IsOSPlatform(System.Runtime.InteropServices.OSPlatform.Linux)) return true;
            var sys = ElfCompat.FindSystemLibStdCxx();
            if (sys == null || ElfCompat.LibraryHasVersion(sys, ElfCompat.MissingVersion))
            {
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low, "Loupe: system libstdc++ is new enough; no TorchSharp compat step needed.");
                return true;
            }
            foreach (var lib in Directory.GetFiles(OutputDir, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                var (requires, weak) = ElfCompat.InspectVersionNeed(lib, ElfCompat.MissingVersion);
                if (!requires || (weak && ElfCompat.MentionsShim(lib))) continue;
                var dir = Path.GetDirectoryName(lib)!;
                var shim = Path.Combine(dir, ElfCompat.ShimName);
                if (!File.Exists(shim) && !BuildShim(shim)) return false;
                if (!weak) ElfCompat.MakeVersionWeak(lib, ElfCompat.MissingVersion);
                if (!ElfCompat.MentionsShim(lib))
                {
                    if (!Run("patchelf", $"--add-needed {ElfCompat.ShimName} \"{lib}\"", out var err))
                    {
                        Log.LogError($"Loupe: could not patch {lib} for this system's libstdc++ ({ElfCompat.MissingVersion} missing): {err}. " +
                                     "Install patchelf first: run scripts/setup.sh (it runs 'apt-get install -y patchelf gcc').");
                        return false;
                    }
                }
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, $"Loupe: patched {lib} for a libstdc++ without {ElfCompat.MissingVersion}.");
            }
            return true;
        }

        bool BuildShim(string shimPath)
        {
            Directory.CreateDirectory(IntermediateDir);
            var src = Path.Combine(IntermediateDir, "loupe_glibcxx_shim.c");
            File.WriteAllText(src, "void " + ElfCompat.ShimSymbol + "(void) {}\n");
            if (Run("gcc", $"-shared -fPIC -O2 -o \"{shimPath}\" \"{src}\"", out var err)) return true;
            Log.LogError($"Loupe: could not build {ElfCompat.ShimName} with gcc: {err}. Run scripts/setup.sh (installs gcc and patchelf).");
            return false;
        }

        static bool Run(string exe, string args, out string error)
        {
            try
            {
                var psi = new System.Diagnostics.ProcessStartInfo(exe, args) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
                using var p = System.Diagnostics.Process.Start(psi)!;
                var stderr = p.StandardError.ReadToEnd();
                p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                error = stderr.Trim();
                return p.ExitCode == 0;
            }
            catch (Exception e) { error = e.Message; return false; }
        }
    }
#endif
}
