#!/usr/bin/env python3
"""Run Lamina's sandbox tests on cgroup v2 inside a throwaway QEMU guest.

Why: the sandbox (src/lamina/sandbox/cgroups.py) has a v1 and a v2 code path, and
a host booted with cgroup v1 can only exercise the first. Most machines run v2.
The guest boots Debian's own kernel with `cgroup_no_v1=all`, so the unified
hierarchy is the only one, and runs pytest from this very tree:

- kernel: the `linux-image-<version>-amd64` package that `linux-image-amd64`
  points at, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
  into a cache directory (nothing is installed on the host);
- initramfs: a static busybox plus the modules the guest needs (9p over virtio
  for the host's root, overlay, tun for slirp4netns), written here as a newc
  cpio archive;
- root file system: the host's `/`, shared read-only over 9p, under an overlay
  whose upper layer is a tmpfs, so tests write freely and the host stays as it
  was;
- no network device (`-nic none`): everything the tests talk to is on the
  guest's own loopback.

The guest's console is this script's output; the last lines say which kernel
and cgroup version ran, the boot and test times, and pytest's summary. The exit
code is pytest's inside the guest (124 on timeout, 125 when the guest cannot be
started at all).

Accelerator: KVM when /dev/kvm runs ordinary guests (the CPU shows vmx or svm),
otherwise QEMU's own translator (TCG), several times slower but exact about
cgroups, which is what is tested. Some hosts expose a /dev/kvm that runs only
specially built guest kernels (PVM, for nested guests without hardware
virtualisation): a stock kernel hangs there before printing anything.

Usage: scripts/cgroup_v2_vm.py [--check] [--full] [--timeout S] [--accel auto|kvm|tcg] [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the guest runs: the v2 tests always; the whole sandbox suite where the guest is
# fast enough (KVM) or when asked (--full). Without hardware virtualisation the guest
# is 25-70 times slower than the host, and conftest.py's imports (boto3) alone take
# most of a minute, so that run skips conftest.py, which only these tests don't need.
V2_TESTS = ["--noconftest", "tests/test_cgroup_v2.py"]
FULL_TESTS = ["tests/test_sandbox_namespaces.py", "tests/test_cgroup_v2.py"]
# Guest modules and what they are for; their dependencies are added from modinfo.
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "tun"]
BUSYBOX = Path("/bin/busybox")
# Markers the guest's init prints, read back from the console.
MARK = "LAMINA-VM"
# Bumped when the initramfs layout changes, so a cached one is rebuilt.
INITRAMFS_VERSION = "4"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "MARK: insmod $m failed"; done
arg() { sed -n "s/.*\blamina\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
echo "MARK: booted $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host || poweroff -f
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || poweroff -f
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs shm /newroot/dev/shm
# Scratch space of the guest's own; the host's /tmp stays visible (through the
# overlay), since the tree under test may be a clone there.
mkdir -p /newroot/.lamina-guest
mount -t tmpfs scratch /newroot/.lamina-guest
mount -t tmpfs run /newroot/run
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
ip link set lo up
echo "MARK: $(grep -c ' cgroup ' /proc/mounts) cgroup v1 mounts; cgroup2 controllers: $(cat /newroot/sys/fs/cgroup/cgroup.controllers)"
# switch_root, not chroot: the kernel refuses a new user namespace (bubblewrap's) to a
# chrooted process. The second stage runs in the new root with busybox copied in.
cp /bin/busybox /newroot/run/busybox
cat > /newroot/run/stage2 <<EOF
#!/run/busybox sh
echo "MARK: tests start \$(/run/busybox cut -d' ' -f1 /proc/uptime) s"
/bin/sh "$(arg run)"
echo "MARK: exit \$?"
echo "MARK: uptime \$(/run/busybox cut -d' ' -f1 /proc/uptime) s"
/run/busybox sync
/run/busybox poweroff -f
EOF
chmod +x /newroot/run/stage2
exec switch_root /newroot /run/stage2
""".replace("MARK", MARK)

# Runs inside the guest, from the host's tree (read-only underneath, writable through the overlay).
RUN = """#!/bin/sh
cd {root}
export HOME=/root PATH={path} PYTHONDONTWRITEBYTECODE=1 LAMINA_CGROUP_V2_GUEST=1
{python} -m pytest -q -rs -p no:cacheprovider --basetemp=/.lamina-guest/pytest {args}
"""


def log(message: str) -> None:
    print(f"cgroup-v2-vm: {message}", flush=True)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lamina" / "vm"


def why_not_runnable() -> str | None:
    """What is missing to run the guest, or None."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "needs Linux on x86_64"
    for tool in ("qemu-system-x86_64", "apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages qemu-system-x86, dpkg, apt)"
    if not BUSYBOX.exists() or _elf_interpreter(BUSYBOX):
        return "a static busybox is not installed at /bin/busybox (Debian package busybox-static)"
    return None


def _elf_interpreter(path: Path) -> bool:
    """Whether an x86-64 ELF file asks for a dynamic loader (PT_INTERP)."""
    data = path.read_bytes()[:4096]
    phoff = int.from_bytes(data[32:40], "little")
    entsize = int.from_bytes(data[54:56], "little")
    count = int.from_bytes(data[56:58], "little")
    for i in range(count):
        start = phoff + i * entsize
        if int.from_bytes(data[start:start + 4], "little") == 3:
            return True
    return False


def choose_accel(wanted: str) -> tuple[str, str]:
    """(accelerator, why) for QEMU."""
    if wanted != "auto":
        return wanted, "chosen"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is not usable"
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    if flags and {"vmx", "svm"} & set(flags.group(1).split()):
        return "kvm", "hardware virtualisation"
    if Path("/sys/module/kvm_pvm").exists():
        return "tcg", "/dev/kvm is PVM, which boots only PVM-built guest kernels"
    return "tcg", "the CPU shows no vmx/svm"


def fetch_kernel(cache: Path) -> tuple[Path, Path]:
    """(vmlinuz, modules dir) of Debian's current amd64 kernel, unpacked once into the cache."""
    current = cache / "kernel"
    if (current / "vmlinuz").exists():
        return _bootable(current), current / "modules"
    with tempfile.TemporaryDirectory(dir=cache) as work:
        package = _download_kernel_package(Path(work))
        deb = next(Path(work).glob("*.deb"))
        unpacked = Path(work) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        version = package.removeprefix("linux-image-")
        staged = Path(work) / "kernel"
        (staged / "modules").mkdir(parents=True)
        shutil.copy(unpacked / "boot" / f"vmlinuz-{version}", staged / "vmlinuz")
        tree = unpacked / "lib" / "modules" / version / "kernel"
        for module in _with_dependencies(tree, MODULES):
            shutil.copy(module, staged / "modules" / module.name)
        (staged / "modules" / "order").write_text(
            "\n".join(m.name for m in _with_dependencies(tree, MODULES)) + "\n")
        (staged / "version").write_text(version + "\n")
        staged.rename(current)
    return _bootable(current), current / "modules"


def _bootable(kernel: Path) -> Path:
    """The uncompressed ELF kernel when it can be had, else the compressed one.

    QEMU starts an ELF kernel at its PVH entry point, skipping the real-mode setup
    and the in-guest decompression: about 15 s of a 25 s boot without KVM.
    """
    vmlinux = kernel / "vmlinux"
    if not vmlinux.exists():
        packed = (kernel / "vmlinuz").read_bytes()
        start = packed.find(b"\xfd7zXZ\x00")  # Debian compresses its kernels with xz
        try:
            elf = lzma.LZMADecompressor().decompress(packed[start:]) if start >= 0 else b""
        except lzma.LZMAError:
            elf = b""
        if not elf.startswith(b"\x7fELF"):
            return kernel / "vmlinuz"
        partial = vmlinux.with_suffix(".partial")
        partial.write_bytes(elf)
        partial.rename(vmlinux)
    return vmlinux


def _download_kernel_package(directory: Path) -> str:
    """apt-get download the kernel package linux-image-amd64 depends on; its name."""
    for attempt in range(2):
        depends = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                                 capture_output=True, text=True, check=False).stdout
        found = re.search(r"Depends: (linux-image-\S+-amd64)", depends)
        if found is not None:
            log(f"downloading {found.group(1)} (once; kept in {cache_dir()})")
            fetched = subprocess.run(["apt-get", "download", "-q", found.group(1)], cwd=directory,
                                     stdout=subprocess.DEVNULL, check=False)
            if fetched.returncode == 0:
                return found.group(1)
        # Package lists missing or stale (the version they name is gone): refresh once.
        if attempt == 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
    raise RuntimeError("cannot download Debian's linux-image-amd64 kernel: run apt-get update")


def _with_dependencies(tree: Path, names: list[str]) -> list[Path]:
    """Module files in load order (dependencies first), from each one's modinfo `depends=`."""
    index = {path.name.split(".ko")[0].replace("-", "_"): path for path in tree.rglob("*.ko*")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        path = index[name.replace("-", "_")]
        if path in ordered:
            return
        if not path.name.endswith(".ko"):
            raise RuntimeError(f"{path.name}: compressed modules are not handled")
        found = re.search(rb"\0depends=([^\0]*)\0", path.read_bytes())
        for dependency in (found.group(1).decode().split(",") if found and found.group(1) else []):
            visit(dependency)
        ordered.append(path)

    for name in names:
        visit(name)
    return ordered


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, content) entries, as the kernel unpacks it."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def build_initramfs(cache: Path, modules: Path) -> Path:
    target = cache / f"initramfs-{INITRAMFS_VERSION}.cpio"
    if target.exists():
        return target
    directory, regular, symlink = 0o040755, 0o100755, 0o120777
    entries: list[tuple[str, int, bytes]] = [(d, directory, b"") for d in (
        "bin", "dev", "proc", "sys", "modules")]
    entries += [("init", regular, INIT.encode()), ("bin/busybox", regular, BUSYBOX.read_bytes()),
                ("bin/sh", symlink, b"busybox")]
    entries += [(f"modules/{m.name}", 0o100644, m.read_bytes()) for m in sorted(modules.iterdir())]
    partial = target.with_suffix(".partial")
    partial.write_bytes(_cpio(entries))
    partial.rename(target)
    return target


def run_guest(args: argparse.Namespace) -> int:
    started = time.monotonic()
    missing = why_not_runnable()
    if missing:
        log(f"cannot run: {missing}")
        return 125
    if not Path(args.python).exists():
        log(f"cannot run: no interpreter at {args.python} (run make test once to create .venv)")
        return 125
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        vmlinuz, modules = fetch_kernel(cache)
        initramfs = build_initramfs(cache, modules)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        log(f"cannot run: no guest kernel or initramfs: {error}")
        return 125
    accel, why = choose_accel(args.accel)
    python = Path(args.python).absolute()
    tests = args.pytest_args or (FULL_TESTS if args.full or accel == "kvm" else V2_TESTS)
    with tempfile.NamedTemporaryFile("w", dir=cache, prefix="run-", suffix=".sh", delete=False) as run:
        run.write(RUN.format(root=ROOT, python=python, args=shlex.join(tests),
                             path=f"{python.parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"))
    os.chmod(run.name, 0o755)
    cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max", "-accel", "tcg,thread=multi"]
    command = [
        "qemu-system-x86_64", *(["-enable-kvm"] if accel == "kvm" else []), *cpu,
        "-smp", str(args.cpus), "-m", f"{args.memory_mb}M",
        "-display", "none", "-nic", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(vmlinuz), "-initrd", str(initramfs),
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-append", " ".join([
            "console=ttyS0", "quiet", "loglevel=3", "panic=-1",
            "cgroup_no_v1=all", "systemd.unified_cgroup_hierarchy=1",
            f"lamina.run={run.name}",
        ]),
    ]
    log(f"booting {(cache / 'kernel' / 'version').read_text().strip()} with {accel} ({why}), "
        f"{args.cpus} vCPUs, {args.memory_mb} MB; running {' '.join(tests)}")
    booted: float | None = None
    code: int | None = None
    summary = ""
    launched = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    timer = threading.Timer(args.timeout, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").replace("\r", "")
            # SeaBIOS and the kernel clear the screen and set modes; keep only text.
            line = re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|c)", "", line)
            sys.stdout.write(line)
            sys.stdout.flush()
            if f"{MARK}: booted" in line and booted is None:
                booted = time.monotonic() - launched
            if f"{MARK}: exit" in line:
                code = int(line.split()[-1])
            if re.search(r"\d+ (passed|failed|error)", line) and " in " in line:
                summary = line.strip().strip("=").strip()
        process.wait()
    finally:
        timer.cancel()
        os.unlink(run.name)
    total = time.monotonic() - started
    if code is None:
        log(f"the guest stopped without a result after {total:.1f} s "
            f"({'timeout' if total >= args.timeout else f'qemu exit code {process.returncode}'})")
        return 124 if total >= args.timeout else 125
    boot = f"{booted:.1f} s" if booted is not None else "?"
    log(f"cgroup v2 ({accel} guest): boot {boot}, whole run {total:.1f} s, pytest exit {code}")
    print(f"{MARK} RESULT: cgroup v2 ({accel} guest) accel={accel} boot_s={boot.split()[0]} "
          f"total_s={total:.1f} exit={code} summary={summary}", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--full", action="store_true",
                        help="run tests/test_sandbox_namespaces.py too, even without KVM")
    parser.add_argument("--check", action="store_true",
                        help="only say whether a guest can run here (exit code 1 and why if not)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the interpreter (with Lamina installed) to run pytest with")
    parser.add_argument("pytest_args", nargs="*", help="what pytest runs in the guest")
    args = parser.parse_args()
    if args.check:
        missing = why_not_runnable()
        if missing:
            print(f"no cgroup v2 guest: {missing}")
        return 1 if missing else 0
    return run_guest(args)


if __name__ == "__main__":
    sys.exit(main())
