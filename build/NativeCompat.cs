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
        const uint ShtDynsym = 11;

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
        public static bool MentionsShim(string elfPath) => Mentions(elfPath, ShimName);

        /// <summary>True when the file holds <paramref name="name"/> as a NUL-terminated string (e.g. a DT_NEEDED entry).</summary>
        public static bool Mentions(string elfPath, string name) =>
            IndexOf(File.ReadAllBytes(elfPath), Encoding.ASCII.GetBytes(name + "\0"), 0) >= 0;

        /// <summary>The value (address) of the dynamic symbol <paramref name="name"/>, or null when the file exports none.</summary>
        public static ulong? DynamicSymbolValue(string elfPath, string name)
        {
            var b = File.ReadAllBytes(elfPath);
            var sym = FindDynamicSymbol(b, name);
            return sym < 0 ? null : BitConverter.ToUInt64(b, sym + 8);
        }

        /// <summary>The name a symbol hidden by <see cref="HideDynamicSymbol"/> carries: its first letter replaced by 'X'.</summary>
        public static string HiddenName(string name) => "X" + name.Substring(1);

        /// <summary>Hides the dynamic symbol <paramref name="name"/> from dlsym by renaming it in place (first letter → 'X'; the
        /// hash table still files it under the old name, so neither name resolves to it). A library later in the search order
        /// (a DT_NEEDED shim) then provides the symbol. Only the first byte of the name changes, so names sharing its tail
        /// (string-table suffix merging) are untouched; refuses when another symbol points at the same string.
        /// Returns false when the file exports no such symbol.</summary>
        public static bool HideDynamicSymbol(string elfPath, string name)
        {
            var b = File.ReadAllBytes(elfPath);
            var sym = FindDynamicSymbol(b, name);
            if (sym < 0) return false;
            var (symtab, count, strtab) = DynamicTables(b);
            uint nameOff = BitConverter.ToUInt32(b, sym);
            for (long i = 0; i < count; i++)
            {
                int e = checked((int)(symtab + i * 24));
                if (e != sym && BitConverter.ToUInt32(b, e) == nameOff)
                    throw new InvalidDataException($"{elfPath}: another dynamic symbol shares the name string of {name}");
            }
            using (var fs = new FileStream(elfPath, FileMode.Open, FileAccess.Write))
            {
                fs.Position = strtab + nameOff;
                fs.WriteByte((byte)'X');
            }
            return true;
        }

        // File offset of the Elf64_Sym in .dynsym named `name`, or -1.
        static int FindDynamicSymbol(byte[] b, string name)
        {
            var (symtab, count, strtab) = DynamicTables(b);
            for (long i = 0; i < count; i++)
            {
                int e = checked((int)(symtab + i * 24));
                if (ReadCString(b, checked((int)(strtab + BitConverter.ToUInt32(b, e)))) == name) return e;
            }
            return -1;
        }

        // (.dynsym file offset, entry count, its string table's file offset).
        static (long Symtab, long Count, long Strtab) DynamicTables(byte[] b)
        {
            int sh = FindSection(b, ShtDynsym);
            if (sh < 0) throw new InvalidDataException("no .dynsym section");
            return (BitConverter.ToInt64(b, sh + 0x18), BitConverter.ToInt64(b, sh + 0x20) / 24, LinkedOffset(b, sh));
        }

        // File offset of the first section header of `type`, or -1 (after checking the ELF header).
        static int FindSection(byte[] b, uint type)
        {
            CheckElf64(b);
            long shoff = BitConverter.ToInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
            for (int i = 0; i < shnum; i++)
            {
                int sh = checked((int)(shoff + (long)i * shentsize));
                if (BitConverter.ToUInt32(b, sh + 4) == type) return sh;
            }
            return -1;
        }

        // File offset of the section that section header `sh` links to (its string table).
        static long LinkedOffset(byte[] b, int sh)
        {
            long shoff = BitConverter.ToInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A);
            uint link = BitConverter.ToUInt32(b, sh + 0x28);
            return BitConverter.ToInt64(b, checked((int)(shoff + (long)link * shentsize)) + 0x18);
        }

        static void CheckElf64(byte[] b)
        {
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
                throw new InvalidDataException("not an ELF file");
            if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("only little-endian ELF64 is supported");
        }

        // Returns the file offset of the Elf64_Vernaux whose name is `version`, or -1.
        static int FindVernaux(byte[] b, string version)
        {
            int sh = FindSection(b, ShtGnuVerneed);
            if (sh >= 0)
            {
                long secOff = BitConverter.ToInt64(b, sh + 0x18), strOff = LinkedOffset(b, sh);
                uint count = BitConverter.ToUInt32(b, sh + 0x2C);
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

    /// <summary>
    /// Deferred release of TorchSharp scalars. TorchSharp's operators turn .NET numbers into temporary <c>Scalar</c> objects and
    /// pass their native handles to libtorch without keeping the objects alive for the call (<c>scalar.Handle</c> is their last
    /// use), so a garbage collection started by another thread can run a temporary's finalizer — which frees the native scalar —
    /// while libtorch is about to read it: "Unknown scalar type", or a wrong value, at random after minutes of work.
    /// The fix is in the build output's copy of libLibTorchSharp.so: its <c>THSTorch_dispose_scalar</c> is hidden and a shim
    /// (a DT_NEEDED library beside it) provides one that queues the pointer and hands it to the original only after at least
    /// <see cref="DelaySeconds"/> s or <see cref="Capacity"/> later releases, whichever comes first — far beyond the
    /// time between a handle's read and libtorch's use (nanoseconds; a scheduler's time slice when the thread is preempted). Memory held: at most 2 × Capacity scalars of 32 bytes.
    /// </summary>
    public static class ScalarRelease
    {
        public const string ShimName = "libloupe_scalar_shim.so";
        public const string Symbol = "THSTorch_dispose_scalar";
        /// <summary>An exported function of the same library whose address locates the hidden original at run time.</summary>
        public const string Anchor = "THSTorch_int8_to_scalar";
        public const int DelaySeconds = 1;
        public const int Capacity = 1 << 18;

        /// <summary>C source of the shim; <paramref name="delta"/> = address of the original release − address of <see cref="Anchor"/>.</summary>
        public static string ShimSource(long delta) =>
            "/* Generated by Loupe (build/NativeCompat.cs): deferred release of TorchSharp scalars. */\n" +
            "#include <pthread.h>\n#include <stddef.h>\n#include <time.h>\n" +
            $"extern void* {Anchor}(signed char);\n" +
            "typedef void (*release_fn)(void*);\n" +
            $"#define CAPACITY {Capacity}\n" +
            "static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;\n" +
            "static void* queue[2][CAPACITY];\nstatic size_t queued[2];\nstatic int current;\nstatic time_t rotated;\n" +
            $"void {Symbol}(void* scalar)\n{{\n" +
            "    if (!scalar) return;\n" +
            $"    release_fn release = (release_fn)((char*)(void*){Anchor} + ({delta}LL));\n" +
            "    struct timespec now;\n    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);\n" +
            "    pthread_mutex_lock(&lock);\n" +
            $"    if (queued[current] == CAPACITY || (queued[current] > 0 && now.tv_sec - rotated >= {DelaySeconds + 1})) {{\n" +
            "        int older = 1 - current;\n" +
            "        for (size_t i = 0; i < queued[older]; i++) release(queue[older][i]);\n" +
            "        queued[older] = 0;\n        current = older;\n        rotated = now.tv_sec;\n    }\n" +
            "    queue[current][queued[current]++] = scalar;\n" +
            "    pthread_mutex_unlock(&lock);\n}\n";
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
            bool glibcxx = sys != null && !ElfCompat.LibraryHasVersion(sys, ElfCompat.MissingVersion);
            if (!glibcxx)
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.Low, "Loupe: system libstdc++ is new enough; no libstdc++ compat step needed.");
            foreach (var lib in Directory.GetFiles(OutputDir, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                if (glibcxx && !PatchLibStdCxx(lib)) return false;
                PatchScalarRelease(lib);
            }
            return true;
        }

        bool PatchLibStdCxx(string lib)
        {
            var (requires, weak) = ElfCompat.InspectVersionNeed(lib, ElfCompat.MissingVersion);
            var shim = Path.Combine(Path.GetDirectoryName(lib)!, ElfCompat.ShimName);
            if (!requires || (weak && ElfCompat.MentionsShim(lib) && File.Exists(shim))) return true;
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
            return true;
        }

        /// <summary>Routes the library's scalar release through the deferring shim (<see cref="ScalarRelease"/>). Without gcc or
        /// patchelf it warns and leaves the library as TorchSharp ships it.</summary>
        void PatchScalarRelease(string lib)
        {
            var hidden = ElfCompat.DynamicSymbolValue(lib, ElfCompat.HiddenName(ScalarRelease.Symbol));
            var release = hidden ?? ElfCompat.DynamicSymbolValue(lib, ScalarRelease.Symbol);
            var anchor = ElfCompat.DynamicSymbolValue(lib, ScalarRelease.Anchor);
            if (release is null || anchor is null)
            {
                Log.LogWarning($"Loupe: {lib} exports no {ScalarRelease.Symbol} or {ScalarRelease.Anchor}; scalar release left as shipped.");
                return;
            }
            Directory.CreateDirectory(IntermediateDir);
            var src = Path.Combine(IntermediateDir, "loupe_scalar_shim.c");
            var code = ScalarRelease.ShimSource((long)release.Value - (long)anchor.Value);
            var shim = Path.Combine(Path.GetDirectoryName(lib)!, ScalarRelease.ShimName);
            bool fresh = File.Exists(shim) && File.Exists(src) && File.ReadAllText(src) == code;
            if (hidden != null && fresh) return;   // done already (a hidden release without its shim would not load)
            const string risk = "TorchSharp may free a temporary scalar while libtorch reads it (random \"Unknown scalar type\" failures in long runs)";
            if (!fresh)
            {
                File.WriteAllText(src, code);
                if (!Run("gcc", $"-shared -fPIC -O2 -pthread -o \"{shim}\" \"{src}\"", out var gccErr))
                {
                    Log.LogWarning($"Loupe: could not build {ScalarRelease.ShimName} with gcc ({gccErr}); {risk}. Run scripts/setup.sh (installs gcc and patchelf).");
                    return;
                }
            }
            if (!ElfCompat.Mentions(lib, ScalarRelease.ShimName) && !Run("patchelf", $"--add-needed {ScalarRelease.ShimName} \"{lib}\"", out var err))
            {
                Log.LogWarning($"Loupe: could not add {ScalarRelease.ShimName} to {lib} ({err}); {risk}. Run scripts/setup.sh (installs gcc and patchelf).");
                return;
            }
            if (hidden == null) ElfCompat.HideDynamicSymbol(lib, ScalarRelease.Symbol);
            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, $"Loupe: {lib} releases TorchSharp scalars through {ScalarRelease.ShimName} (deferred).");
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
