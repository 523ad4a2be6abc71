"""The agent runtime layer (runtime/agentrt.py says how sandboxes use it), made from the built-in `base` image:

    bin/python3.11                      base's interpreter
    lib/ld.so -> ld-linux-x86-64.so.2   base's dynamic loader
    lib/<soname>                        every library the interpreter, its extension modules and the agent's
                                        packages need (their DT_NEEDED, followed), from base's library dirs
    lib/python3.11/                     the standard library, without tests, IDLE, tkinter and the like
    venv/                               the agent's venv: its packages (no pip or setuptools), its
                                        interpreter a link to bin/python3.11, `home` the tree's bin/

Symlinks are resolved inside base as the copy is made (base has absolute ones, e.g. into /etc), so
nothing in the tree points into the image it is bound into. One layer per base build, made at the first
import that needs it; its files belong to host root and are world-readable (the tree is read-only anyway).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import struct
from pathlib import Path

from sandboxd.errors import BuildFailed
from sandboxd.runtime import inroot
from sandboxd.runtime.agentrt import AGENT_RUNTIME, LIBS, LOADER, PYTHON, TARGET

RT_VERSION = 1
PY = "python3.11"
STDLIB_TRIM = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "venv", "__phello__",
               "turtle.py", "sitecustomize.py", "EXTERNALLY-MANAGED", f"config-3.11-{os.uname().machine}-linux-gnu"}
SITE_TRIM = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")
DYNLOAD_TRIM = ("_test", "_ctypes_test", "xxlimited", "_xxtestfuzz")
AGENT_SITE = f"/opt/sandboxd/venv/lib/{PY}/site-packages"
PT_INTERP, PT_DYNAMIC, PT_LOAD = 3, 2, 1
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29


def layer_key(base_hash: str) -> str:
    return hashlib.sha256(json.dumps([AGENT_RUNTIME, RT_VERSION, base_hash]).encode()).hexdigest()


async def ensure(store, log) -> Path:
    """The runtime layer of the current `base` build (made now if missing); its rootfs path."""
    base = await store.ensure_builtin("base", log)
    key = layer_key(base.content_hash)
    if store.has_layer(key):
        return store.layer_path(key)
    log("making the agent's own runtime (glibc, Python 3.11, the agent's packages) from base")
    staged = store.new_tmp("agentrt")
    try:
        await asyncio.to_thread(make_tree, base.layers[0], staged / "rootfs")
        return store.commit_layer(staged, key, {"kind": AGENT_RUNTIME, "parent": base.content_hash})
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, staged, True)
        raise


def make_tree(base_root: Path, rt: Path) -> None:
    stack = inroot.Stack([base_root])
    rt.mkdir(parents=True)
    python = _real(stack, f"/usr/bin/{PY}")
    _copy_file(python, rt / "bin" / PY)
    _copy_dir(stack, base_root, f"/usr/lib/{PY}", rt / "lib" / PY,
              lambda rel, name: rel == "" and name in STDLIB_TRIM or rel == "lib-dynload" and name.startswith(DYNLOAD_TRIM))
    _copy_dir(stack, base_root, AGENT_SITE, rt / "venv" / "lib" / PY / "site-packages",
              lambda rel, name: rel == "" and name.startswith(SITE_TRIM))
    version = next((line for line in _real(stack, "/opt/sandboxd/venv/pyvenv.cfg").read_text().splitlines()
                    if line.startswith("version")), f"version = {PY[6:]}")
    (rt / "venv" / "pyvenv.cfg").write_text(f"home = {TARGET}/bin\ninclude-system-site-packages = false\n{version}\n")
    (rt / PYTHON).parent.mkdir(parents=True)
    os.symlink(f"../../bin/{PY}", rt / PYTHON)
    interp = _elf(python)[0]
    if not interp:
        raise BuildFailed(f"base's {PY} names no dynamic loader")
    _copy_file(_real(stack, interp), rt / LIBS / os.path.basename(interp))
    os.symlink(os.path.basename(interp), rt / LOADER)
    _libraries(stack, rt)
    for dirpath, dirnames, filenames in os.walk(rt):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):  # read (and run where it runs) for every sandbox user
                os.chmod(path, stat.S_IMODE(mode) | 0o444 | (0o111 if mode & 0o111 or stat.S_ISDIR(mode) else 0))


def _real(stack: inroot.Stack, path: str) -> Path:
    """The host path of the regular file path names in base, symlinks followed inside base."""
    entry = stack.lookup(path, follow=True)
    if entry is None or not stat.S_ISREG(entry.st.st_mode):
        raise BuildFailed(f"base has no {path}: the agent runtime cannot be made")
    return entry.host_path


def _copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)  # the sources' mtimes: the .pyc next to them stay valid


def _copy_dir(stack: inroot.Stack, base_root: Path, path: str, dest: Path, skip) -> None:
    """Copy the directory path of base to dest, every symlink replaced by the file it names inside base (or
    left out when that is no regular file), leaving out what skip(dir relative to path, name) says."""
    src = base_root / path.lstrip("/")
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        rel = "" if rel == "." else rel
        dirnames[:] = [d for d in dirnames if not skip(rel, d) and not os.path.islink(os.path.join(dirpath, d))]
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if skip(rel, name):
                continue
            here = os.path.join(dirpath, name)
            if os.path.islink(here):
                entry = stack.lookup(os.path.join(path, rel, name), follow=True)
                if entry is None or not stat.S_ISREG(entry.st.st_mode):
                    continue
                here = str(entry.host_path)
            if stat.S_ISREG(os.lstat(here).st_mode):
                shutil.copy2(here, out / name)


def _libraries(stack: inroot.Stack, rt: Path) -> None:
    """Copy into lib/ every shared library the tree's ELF files need, from base's library directories."""
    arch = f"{os.uname().machine}-linux-gnu"
    search = [f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/lib", "/lib"]
    todo = [rt / "bin" / PY, *(p for p in (rt / "lib" / PY / "lib-dynload").glob("*.so")),
            *(p for p in (rt / "venv").rglob("*.so*") if p.is_file())]
    while todo:
        path = todo.pop()
        _, needed, runpath = _elf(path)
        origins = [Path(r.replace("$ORIGIN", str(path.parent))) for r in runpath if r.startswith("$ORIGIN")]
        for name in needed:
            if (rt / LIBS / name).exists() or any((d / name).exists() for d in origins):
                continue
            for d in search:
                entry = stack.lookup(f"{d}/{name}", follow=True)
                if entry is not None and stat.S_ISREG(entry.st.st_mode):
                    _copy_file(entry.host_path, rt / LIBS / name)
                    todo.append(rt / LIBS / name)
                    break
            else:
                raise BuildFailed(f"base has no {name}, which {path.name} needs: the agent runtime cannot be made")


def _elf(path: Path) -> tuple[str, list[str], list[str]]:
    """(PT_INTERP, DT_NEEDED, DT_RUNPATH/DT_RPATH entries) of a 64-bit little-endian ELF file; empty for
    any other file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x7fELF\x02\x01":
        return "", [], []
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, interp, dynamic = [], "", None
    for i in range(phnum):
        p_type, _, off, vaddr, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((vaddr, off, filesz))
        elif p_type == PT_INTERP:
            interp = data[off:off + filesz].split(b"\0")[0].decode()
        elif p_type == PT_DYNAMIC:
            dynamic = (off, filesz)
    if dynamic is None:
        return interp, [], []
    entries = [struct.unpack_from("<qQ", data, dynamic[0] + i) for i in range(0, dynamic[1], 16)]
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    base = next((o + strtab - va for va, o, sz in loads if strtab is not None and va <= strtab < va + sz), None)
    if base is None:
        return interp, [], []

    def string(at: int) -> str:
        return data[base + at:data.index(b"\0", base + at)].decode()

    needed = [string(v) for t, v in entries if t == DT_NEEDED]
    runpath = [p for t, v in entries if t in (DT_RPATH, DT_RUNPATH) for p in string(v).split(":") if p]
    return interp, needed, runpath
