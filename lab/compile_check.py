#!/usr/bin/env python3
"""Compiles the embedded kernels with NVRTC for sm_90a exactly as the CUDA backend does, then reports each
kernel's registers, spills and shared memory from ptxas. Runs without a GPU: it needs only libnvrtc
(DISTFLASH_LIBNVRTC or on the loader path) and, for the report, ptxas (PTXAS or on PATH).

Usage: lab/compile_check.py [file.cu ...]   (default: every file in Sources/DistFlashAttnCUDA/kernels)
"""
import ctypes, os, pathlib, re, shutil, subprocess, sys, tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OPTIONS = [b"-std=c++17", b"-default-device", b"-lineinfo", b"--gpu-architecture=sm_90a"]


def nvrtc():
    for name in filter(None, [os.environ.get("DISTFLASH_LIBNVRTC"), "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    sys.exit("libnvrtc not found: set DISTFLASH_LIBNVRTC to its path")


def spliced(path, done=None):
    """The source with each local `#include "file"` replaced by that file (recursively, each file once), as the
    backend does."""
    done = set() if done is None else done
    lines = []
    for line in path.read_text().splitlines():
        match = re.match(r'#include "(.+)"', line)
        if not match:
            lines.append(line)
            continue
        header = (path.parent / match.group(1)).resolve()
        if header not in done:
            done.add(header)
            lines.append(spliced(header, done).decode())
    return "\n".join(lines).encode()


def compile_ptx(lib, path):
    program = ctypes.c_void_p()
    source = spliced(path)
    assert lib.nvrtcCreateProgram(ctypes.byref(program), source, str(path.name).encode(), 0, None, None) == 0
    options = (ctypes.c_char_p * len(OPTIONS))(*OPTIONS)
    status = lib.nvrtcCompileProgram(program, len(OPTIONS), options)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, log)
    if status != 0:
        sys.exit(f"{path}: NVRTC error {status}\n{log.value.decode()}")
    lib.nvrtcGetPTXSize(program, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(program, ptx)
    return ptx.value, log.value.decode().strip()


def main():
    files = [pathlib.Path(a) for a in sys.argv[1:]] or sorted((ROOT / "Sources/DistFlashAttnCUDA/kernels").glob("*.cu"))
    lib = nvrtc()
    ptxas = os.environ.get("PTXAS") or shutil.which("ptxas")
    for path in files:
        ptx, log = compile_ptx(lib, path)
        print(f"== {path.name}: compiled" + (f"\n{log}" if log else ""))
        if not ptxas:
            continue
        with tempfile.NamedTemporaryFile(suffix=".ptx") as f:
            f.write(ptx)
            f.flush()
            report = subprocess.run([ptxas, "-v", "-arch=sm_90a", f.name, "-o", os.devnull],
                                    capture_output=True, text=True)
        for line in report.stderr.splitlines():
            if "Compiling entry" in line or "registers" in line or "spill" in line or "warning" in line:
                print("   " + line.split("info    : ")[-1])
        if report.returncode:
            sys.exit(report.stderr)


if __name__ == "__main__":
    main()
