"""The system-call filter a function's processes run under (bubblewrap's `--seccomp FD`).

The filter is Docker's and Podman's default profile (moby `profiles/seccomp/default.json`)
as it applies to a container granted no capabilities, made stricter where a Lambda
function has no business at all:

- default action ERRNO(EPERM), as Docker: a refused call fails like a missing privilege,
  which programs already handle;
- `clone3` answers ENOSYS, as Docker: glibc then falls back to `clone`, whose flags a
  classic BPF filter can read (clone3's live behind a pointer it cannot);
- `clone` is refused with any namespace flag (CLONE_NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID,
  NEWNET, NEWCGROUP); `unshare`, `setns`, the mount family, `chroot`, `pivot_root` are
  refused outright, as Docker does without CAP_SYS_ADMIN;
- `socket` is refused for AF_ALG (the kernel crypto API) and AF_VSOCK, as Docker, and
  also when the family has bits above the 32 the kernel reads (a way around Docker's rule);
- `personality` accepts only Docker's values (PER_LINUX, PER_LINUX32, UNAME26, and the
  0xffffffff query);
- unlike Docker, `ptrace`, `process_vm_readv` and `process_vm_writev` are refused: Docker
  allows them from kernel 4.8, Lambda does not, and they are the tools for reading another
  process's memory should anything else fail;
- syscalls newer than any this module knows answer ENOSYS rather than EPERM (runc does the
  same for Docker): a future libc probes a new call and falls back on ENOSYS only, as
  glibc's fchmodat does with fchmodat2.

Architectures: the filter is built for the native one only. Any other (on x86_64: i386
via `int 0x80`, and x32 calls) kills the process. Docker instead adds x86 and x32 to the
filter so 32-bit binaries run; Lambda's runtimes are 64-bit, and the i386 entry is where
filters have been bypassed (socketcall(2) carries the socket family behind a pointer, so the AF_ALG
rule above could not hold there).

bubblewrap loads the program in the sandboxed child just before it execs the command, so
its own set-up (mounts, namespaces, its PID 1) is unaffected; the command and everything
it starts are filtered, for good: a filter can only be narrowed, never removed.

The program is compiled by libseccomp (through `pyseccomp`, a ctypes binding to the
system's libseccomp.so.2), never assembled by hand.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

# Docker's allowlist: the unconditional group of default.json plus its amd64-only
# `arch_prctl` and x86 `modify_ldt`; its group for kernels from 4.8 (ptrace,
# process_vm_readv, process_vm_writev) is left out. Names of other architectures (chown32, mmap2, _llseek, ...) are kept
# as Docker spells the list, so a diff against it stays readable; libseccomp resolves
# them to nothing on x86_64 and they are skipped.
ALLOWED: frozenset[str] = frozenset("""
accept accept4 access adjtimex alarm arch_prctl bind brk cachestat capget capset chdir
chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64
clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range
connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl
epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve
execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64
fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait
futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid
getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir
mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 modify_ldt mprotect mq_getsetattr
mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64
mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64
prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat
renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev
""".split())  # noqa: SIM905 (a word list reads like Docker's)

# Refused, and named here because a reader looks for them (every call not allowed is
# refused; this is not the whole list). Docker refuses all of them to a container without
# capabilities except the first three.
DENIED: frozenset[str] = frozenset("""
ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd process_madvise
keyctl add_key request_key
io_uring_setup io_uring_enter io_uring_register
perf_event_open bpf userfaultfd
unshare setns mount umount2 pivot_root chroot fsopen fsconfig fsmount fspick move_mount
open_tree open_tree_attr mount_setattr
kexec_load kexec_file_load init_module finit_module delete_module reboot swapon swapoff
open_by_handle_at acct quotactl quotactl_fd lookup_dcookie syslog
iopl ioperm settimeofday clock_settime sethostname setdomainname
""".split())  # noqa: SIM905

# Numbers of syscalls newer than the libseccomp this module may meet (Debian 12 ships
# 2.5.4): since 5.1 (pidfd_send_signal, 424) a new syscall has one number on every
# architecture, so these hold wherever the filter is built.
_NUMBER_IF_UNKNOWN = {
    "statmount": 457, "listmount": 458, "mseal": 462,
    "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466,
}
# The newest syscall number this module has an opinion on (file_setattr, Linux 6.17).
# Numbers above it, up to 511 (from 512 x86_64 keeps the slots of x32's compat calls),
# answer ENOSYS, as an older kernel would.
_NEWEST_KNOWN = 469
_FUTURE = range(_NEWEST_KNOWN + 1, 512)

# clone(2) flags that create namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET. Docker's mask (2114060288).
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_AF_ALG = 38
_AF_VSOCK = 40
# personality(2) values Docker accepts: PER_LINUX, PER_LINUX32, UNAME26,
# UNAME26|PER_LINUX32, and 0xffffffff (a query that changes nothing).
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# libseccomp's SCMP_FLTATR_CTL_OPTIMIZE level 2: a binary search over syscall numbers
# rather than a linear list, so a common call is decided in a handful of instructions.
_BINARY_TREE = 2


# What a SnapStart template may do beyond everyone else (sandbox/zygote.py): make the
# namespaces of the environments it forks and mount their /proc and /tmp. Each fork
# then loads the ordinary filter on top, which refuses all of these again.
TEMPLATE_EXTRA = ("unshare", "mount", "umount2", "sethostname")


def _compile(template: bool = False) -> bytes:
    try:
        import pyseccomp as sc  # type: ignore[import-untyped]
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 not found
        raise RuntimeError(f"cannot build the seccomp filter: {exc}") from exc

    flt: Any = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    flt.set_attr(sc.Attr.CTL_OPTIMIZE, _BINARY_TREE)

    def number(name: str) -> int | None:
        nr: int = sc.resolve_syscall(sc.Arch.NATIVE, name)
        if nr == -1:  # unknown to this libseccomp
            return _NUMBER_IF_UNKNOWN.get(name)
        return nr if nr >= 0 else None  # negative: a syscall of another architecture

    for name in sorted(ALLOWED):
        nr = number(name)
        if nr is not None:
            flt.add_rule(sc.ALLOW, nr)
    for domain_rule in (sc.Arg(0, sc.LT, _AF_ALG), sc.Arg(0, sc.EQ, _AF_ALG + 1),
                        sc.Arg(0, sc.GT, _AF_VSOCK)):
        flt.add_rule(sc.ALLOW, "socket", domain_rule)
    # The family is an int: the kernel reads the low 32 bits of the register, the filter
    # all 64, so 0x1_00000028 passes "> 40" and opens AF_VSOCK (Docker's rules have this
    # hole). libseccomp 2.5 takes one comparison per argument and rule, so values above
    # 32 bits get a rule of their own; it is decided before the "> 40" one.
    flt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, 0xFFFFFFFF))
    for persona in _PERSONALITIES:
        flt.add_rule(sc.ALLOW, "personality", sc.Arg(0, sc.EQ, persona))
    if template:
        for name in TEMPLATE_EXTRA:
            flt.add_rule(sc.ALLOW, name)
    flt.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_NAMESPACE_FLAGS, 0))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for nr in _FUTURE:
        flt.add_rule(sc.ERRNO(errno.ENOSYS), nr)

    # libseccomp writes to a file descriptor; a memfd keeps the program off the disk.
    with open(os.memfd_create("lamina-seccomp-compile"), "w+b") as exported:
        flt.export_bpf(exported)
        exported.seek(0)
        return exported.read()


@functools.cache
def filter_program() -> bytes:
    """The compiled classic-BPF program (an array of struct sock_filter), as bubblewrap's
    `--seccomp FD` reads it. Compiled once per process."""
    return _compile()


@functools.cache
def template_filter_program() -> bytes:
    """The SnapStart template's filter: the ordinary one plus TEMPLATE_EXTRA."""
    return _compile(template=True)


def template_filter_fd() -> int:
    return filter_fd(template_filter_program())


def filter_fd(program: bytes | None = None) -> int:
    """A new readable fd positioned at the start of the program, for `pass_fds` and
    `--seccomp FD`. bubblewrap reads it to the end, so each launch needs its own; the
    caller closes it after the launch."""
    program = filter_program() if program is None else program
    fd = os.memfd_create("lamina-seccomp")
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
