"""Assemble the file trees of the worker image's FROM-scratch runtime stage.

Runs inside the build stage with the base image's own Python, whichever base
that is (the official slim image keeps Python under /usr/local, Debian under
/usr). Standard library only.

``runtime``: copy the Python binary, its trimmed standard library, the shared
libraries that ``ldd`` lists for the binary and every extension module, the
CA bundle and a passwd/group pair for the unprivileged user into ROOT, then
precompile the standard library for the paths it will have at run time.

``app``: copy the files of the named distributions installed in the venv
(from their RECORD) into ROOT, precompiled, so that they form a layer of their
own on top of the dependencies.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

# Standard library parts a batch worker never imports: tests, GUI, REPL helpers,
# packaging bootstrap, obsolete converters, and their extension modules.
STDLIB_DROP = {
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "curses",
    "dbm",
    "site-packages",
    "dist-packages",
    "__phello__",
    "__pycache__",
}
STDLIB_DROP_PREFIX = ("config-3", "_sysconfigdata_d")
DYNLOAD_DROP = re.compile(
    r"^(_tkinter|_test|_ctypes_test|_xxtestfuzz|xxlimited|xxsubtype|_curses|_dbm|_gdbm|readline)"
)
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt",)
LDD_PATH = re.compile(r"(/\S+)")


def mirror_path(root: Path, path: str) -> None:
    """Copy ``path`` into ``root`` at the same place, keeping every symlink on the way."""
    source = Path(path)
    # A parent directory may be a symlink (merged /usr: /lib -> usr/lib): recreate the
    # link, then copy the file to the directory it points at.
    for depth in range(2, len(source.parent.parts) + 1):
        prefix = Path(*source.parent.parts[:depth])
        if prefix.is_symlink():
            link = root / prefix.relative_to("/")
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.readlink(prefix))
            mirror_path(root, str(prefix.resolve() / source.relative_to(prefix)))
            return
    target = root / source.relative_to("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        pointed = os.readlink(source)
        target.symlink_to(pointed)
        mirror_path(root, os.path.normpath(source.parent / pointed))
        return
    shutil.copy2(source, target)


def shared_libraries(binaries: list[Path]) -> set[str]:
    """Every library path (and the program interpreter) ``ldd`` lists for ``binaries``."""
    found: set[str] = set()
    for binary in binaries:
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            continue  # statically linked or not an ELF object
        for line in done.stdout.splitlines():
            if "not found" in line:
                raise SystemExit(f"{binary}: a shared library is missing: {line.strip()}")
            match = LDD_PATH.search(line.split("=>", 1)[-1])
            if match:
                found.add(match.group(1))
    return found


def copy_stdlib(root: Path, stdlib: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        dropped = {n for n in names if n in STDLIB_DROP or n.startswith(STDLIB_DROP_PREFIX)}
        if Path(directory).name == "lib-dynload":
            dropped |= {n for n in names if DYNLOAD_DROP.match(n)}
        # Debian links sitecustomize.py to /etc; the worker does not need it.
        dropped |= {n for n in names if n == "sitecustomize.py"}
        return dropped

    shutil.copytree(stdlib, root / stdlib.relative_to("/"), symlinks=True, ignore=ignore)


def write_user(root: Path, uid: int, gid: int, home: str) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/sbin/nologin\nttg:x:{uid}:{gid}:TTG worker:{home}:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nttg:x:{gid}:\n")
    for directory, owner, mode in (
        (home, uid, 0o755),
        ("/output", uid, 0o755),
        ("/tmp", 0, 0o1777),
    ):
        path = root / directory.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, owner, gid if owner else 0)
        path.chmod(mode)


def compile_tree(tree: Path, strip: Path) -> None:
    """Precompile ``tree`` with hash-based pycs whose recorded paths drop ``strip``."""
    ok = compileall.compile_dir(
        str(tree),
        quiet=2,
        workers=0,
        stripdir=str(strip),
        prependdir="/",
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise SystemExit(f"precompiling {tree} failed")


def runtime(root: Path, venv: Path, uid: int, gid: int, home: str) -> None:
    executable = Path(shutil.which("python3") or sys.executable)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    mirror_path(root, str(executable))
    mirror_path(root, str(executable.resolve()))
    copy_stdlib(root, stdlib)

    objects = [executable.resolve()]
    objects += sorted((root / stdlib.relative_to("/")).rglob("*.so"))
    objects += sorted(venv.rglob("*.so"))
    for library in sorted(shared_libraries(objects)):
        mirror_path(root, library)
    for extra in (*CA_BUNDLES, "/etc/ld.so.cache"):
        if Path(extra).exists():
            mirror_path(root, extra)
    write_user(root, uid, gid, home)
    compile_tree(root / stdlib.relative_to("/"), root)


def app_layer(root: Path, venv: Path, names: list[str]) -> None:
    purelib = Path(sysconfig.get_path("purelib", scheme="venv", vars={"base": str(venv)}))
    for name in names:
        dist = _distribution(purelib, name)
        for entry in dist.files or []:
            source = Path(os.path.normpath(purelib / entry))
            if source.suffix == ".pyc" or not source.exists():
                continue
            mirror_path(root, str(source))
    compile_tree(root / venv.relative_to("/"), root)


def _distribution(purelib: Path, name: str) -> metadata.Distribution:
    found = list(metadata.distributions(path=[str(purelib)], name=name))
    if not found:
        raise SystemExit(f"{name} is not installed in {purelib}")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("runtime")
    run.add_argument("--root", type=Path, required=True)
    run.add_argument("--venv", type=Path, required=True)
    run.add_argument("--uid", type=int, default=10001)
    run.add_argument("--gid", type=int, default=10001)
    run.add_argument("--home", default="/home/ttg")
    app = sub.add_parser("app")
    app.add_argument("--root", type=Path, required=True)
    app.add_argument("--venv", type=Path, required=True)
    app.add_argument("names", nargs="+")
    args = parser.parse_args()
    if args.command == "runtime":
        runtime(args.root, args.venv, args.uid, args.gid, args.home)
    else:
        app_layer(args.root, args.venv, args.names)


if __name__ == "__main__":
    main()
