"""The first code a sandboxed run executes, in a fresh interpreter (``python -I -S -B -c``).

It is passed as source text, not imported: the child runs isolated, without kagent or
site-packages on its path, so this file uses the standard library only. It reads its
configuration (and the program) from stdin, locks the process down layer by layer and only then
runs the model's code. Each layer stops something on its own (see docs/security.md):

1. **user**: a user namespace in which the program runs as uid 1000 with no capabilities. When the
   agent itself runs as root (never in a pod), the sandbox first becomes host uid 65534.
2. **pid**: its own PID namespace; the program is its init (pid 1). No process outside it can be
   named (kill, prlimit, ptrace, /proc), and when pid 1 dies the kernel kills everything in it.
3. **network**: its own network namespace: no interfaces but a down loopback.
4. **mount**: its own mount namespace with a new root holding only read-only binds of the Python
   standard library and the system's shared libraries, four device files and a size-capped tmpfs
   scratch directory at /tmp; no /proc, no /etc, no host directory is written. The tmpfs goes
   away with the namespace, whatever the program did to its permissions.
5. **landlock**: the kernel refuses any file access outside the scratch directory except reading
   the libraries (on newer kernels also TCP and signals to processes outside the sandbox).
6. **seccomp**: a filter built by libseccomp in the agent (passed in as BPF): no new processes
   or programs, no ptrace, no prlimit or signals aimed outside, no pidfds, no new namespaces, no
   mounts, no keyrings, io_uring, bpf or userfaultfd.
7. **limits**: CPU time, address space, file size, open files, threads.
8. **guard**: an audit hook (PEP 578) that turns refused operations into clear errors early. It is
   a convenience, not a boundary: the kernel layers above are.

Progress goes to the status pipe as JSON lines, never to the program's output: ``init`` (the
global pid of the sandbox's pid 1), ``ready`` (the layers in place), ``refused`` (a required layer
is missing: nothing of the model's runs), ``exit`` (how pid 1 ended).
"""

import json
import os
import select
import signal
import sys

SANDBOX_UID = 1000
"""The program's uid and gid inside its user namespace."""
ROOT_FALLBACK_UID = 65534
"""The host uid a sandbox started by root switches to (nobody)."""
SCRATCH = "/tmp"
"""Where the scratch file system is, inside the sandbox's own root."""

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY = 1
MOUNT_ATTR_NOSUID = 2
MOUNT_ATTR_NODEV = 4
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_COMMON_SYSCALLS = {"mount_setattr": 442, "landlock_create_ruleset": 444,
                    "landlock_add_rule": 445, "landlock_restrict_self": 446}
SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, **_COMMON_SYSCALLS},
    "aarch64": {"pivot_root": 41, "capset": 91, **_COMMON_SYSCALLS},
}
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Landlock filesystem rights, by the ABI version that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_MAKE_CHAR = 1 << 6
FS_MAKE_BLOCK = 1 << 11
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

STRICT_LAYERS = ("user", "pid", "network", "mount", "landlock", "seccomp", "limits", "guard")
"""Every layer a strict sandbox needs before the model's code may run."""


class Kernel:
    """The few libc and raw system calls the layers need, through ctypes (unloaded before the
    model's code runs, see _forget_ctypes)."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                    ctypes.c_ulong, ctypes.c_char_p]
        self.libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.numbers = SYSCALLS.get(os.uname().machine, {})

    def check(self, result, what):
        if result < 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")
        return result

    def syscall(self, name, *args):
        number = self.numbers.get(name)
        if number is None:
            raise OSError(38, f"{name}: unknown on {os.uname().machine}")
        return self.check(self.libc.syscall(number, *args), name)

    def prctl(self, *args):
        args = [self.ctypes.c_ulong(a) if isinstance(a, int) else a for a in args]
        args += [self.ctypes.c_ulong(0)] * (5 - len(args))
        return self.check(self.libc.prctl(*args), f"prctl {args[0].value}")

    def unshare(self, flags):
        return self.check(self.libc.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None):
        encode = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
        return self.check(self.libc.mount(encode(source), encode(target), encode(fstype), flags,
                                          encode(data)), f"mount {target}")

    def set_mount_attributes(self, path, attributes, recursive):
        ctypes = self.ctypes

        class MountAttr(ctypes.Structure):
            _fields_ = [("set", ctypes.c_uint64), ("clear", ctypes.c_uint64),
                        ("propagation", ctypes.c_uint64), ("userns", ctypes.c_uint64)]

        attr = MountAttr(attributes, 0, 0, 0)
        self.syscall("mount_setattr", ctypes.c_int(AT_FDCWD), path.encode(),
                     ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                     ctypes.c_size_t(ctypes.sizeof(attr)))


def _write(proc, name, text):
    fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map_ids(proc, outside_uid, outside_gid):
    """Map one id (ours) into the new user namespace; an unprivileged process may map only its
    own ids, and must deny setgroups first. ``proc`` is our /proc directory, opened before the
    root changed (the new root has no /proc)."""
    _write(proc, "setgroups", "deny")
    _write(proc, "uid_map", f"{SANDBOX_UID} {outside_uid} 1\n")
    _write(proc, "gid_map", f"{SANDBOX_UID} {outside_gid} 1\n")


def _become_root_fallback_user():
    """Root never runs model code: switch to nobody, for real (a different host uid)."""
    os.setgroups([])
    os.setresgid(ROOT_FALLBACK_UID, ROOT_FALLBACK_UID, ROOT_FALLBACK_UID)
    os.setresuid(ROOT_FALLBACK_UID, ROOT_FALLBACK_UID, ROOT_FALLBACK_UID)


def _bind_plan(read_dirs, read_files):
    """Which host paths to bind where: each directory once (nested ones are covered by their
    parent), symbolic links (merged /usr: /lib -> usr/lib) recreated as links."""
    links, dirs = {}, []
    for path in read_dirs:
        if os.path.islink(path) and os.path.dirname(path) == "/":
            links[path] = os.readlink(path)
        real = os.path.realpath(path)
        if os.path.isdir(real):
            dirs.append(real)
    dirs = sorted(set(dirs))
    covered = [d for d in dirs if not any(d.startswith(p + "/") for p in dirs if p != d)]
    files = [os.path.realpath(f) for f in read_files if os.path.exists(f)]
    return covered, files, links


def _build_root(kernel, base, read_dirs, device_files, scratch_options):
    """A new root on a tmpfs mounted over ``base`` (the namespace's private copy of it): read-only
    binds of what Python needs, device files, the scratch tmpfs; then pivot_root into it."""
    kernel.mount("none", "/", None, MS_REC | MS_PRIVATE)
    kernel.mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    dirs, files, links = _bind_plan(read_dirs, device_files)
    for link, target in links.items():
        os.symlink(target, base + link)
    for source in dirs:
        target = base + source
        if os.path.islink(os.path.dirname(target)):
            continue
        os.makedirs(target, mode=0o755, exist_ok=True)
        kernel.mount(source, target, None, MS_BIND | MS_REC)
        kernel.set_mount_attributes(
            target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, recursive=True)
    for source in files:
        target = base + source
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        kernel.mount(source, target, None, MS_BIND)
        read_only = 0 if source.startswith("/dev/") else MOUNT_ATTR_RDONLY
        kernel.set_mount_attributes(target, read_only | MOUNT_ATTR_NOSUID, recursive=False)
    os.makedirs(base + SCRATCH, mode=0o755, exist_ok=True)
    # noexec: a program written there can be neither executed nor loaded as a native module.
    kernel.mount("tmpfs", base + SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 scratch_options)
    os.chdir(base)
    kernel.syscall("pivot_root", b".", b".")
    kernel.check(kernel.libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    kernel.set_mount_attributes("/", MOUNT_ATTR_RDONLY, recursive=False)


def _drop_capabilities(kernel):
    """No capabilities, none to regain: bounding and ambient sets cleared, no_new_privs set."""
    for cap in range(64):
        try:
            kernel.prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break  # past the last capability this kernel knows
    try:
        kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    ctypes = kernel.ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    kernel.syscall("capset", ctypes.byref(Header(0x20080522, 0)), (Data * 2)())
    kernel.prctl(PR_SET_NO_NEW_PRIVS, 1)


def _landlock(kernel, scratch, read_dirs, read_files, rw_files):
    ctypes = kernel.ctypes
    abi = kernel.libc.syscall(kernel.numbers.get("landlock_create_ruleset", -1), None, 0,
                              LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        raise OSError(ctypes.get_errno(), f"not offered by this kernel "
                                          f"({os.strerror(ctypes.get_errno())})")
    fs = (1 << 13) - 1
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    if abi >= 5:
        fs |= FS_IOCTL_DEV
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = kernel.syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size),
                             ctypes.c_uint32(0))
    truncate = fs & FS_TRUNCATE
    # No EXECUTE anywhere: execve is refused (shared libraries are mapped, which needs READ).
    rules = [(scratch, fs & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_EXECUTE))]
    rules += [(d, FS_READ_FILE | FS_READ_DIR) for d in read_dirs]
    rules += [(f, FS_READ_FILE) for f in read_files]
    rules += [(f, FS_READ_FILE | FS_WRITE_FILE | truncate) for f in rw_files]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not os.path.isdir(path):
                rights &= FS_READ_FILE | FS_WRITE_FILE | truncate | (fs & FS_IOCTL_DEV)
            rule = PathBeneath(rights, fd)
            kernel.syscall("landlock_add_rule", ruleset, LANDLOCK_RULE_PATH_BENEATH,
                           ctypes.byref(rule), 0)
        finally:
            os.close(fd)
    kernel.prctl(PR_SET_NO_NEW_PRIVS, 1)
    kernel.syscall("landlock_restrict_self", ruleset, 0)
    os.close(ruleset)
    extras = (", tcp" if net else "") + (", unix sockets and signals" if scoped else "")
    return f"abi {abi} (files{extras})"


def _seccomp(kernel, program):
    """Install the BPF program libseccomp built in the agent (classic BPF, 8 bytes a rule)."""
    import base64

    ctypes = kernel.ctypes
    code = base64.b64decode(program)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    buffer = ctypes.create_string_buffer(code, len(code))
    prog = SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_char_p))
    kernel.prctl(PR_SET_NO_NEW_PRIVS, 1)
    kernel.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog))
    return f"{len(code) // 8} instructions"


def _set_limits(limits):
    import resource

    def cap(which, soft, hard=None):
        hard = soft if hard is None else hard
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))

    cap(resource.RLIMIT_CORE, 0)
    # SIGXCPU at the soft limit (reported as a CPU-time kill), SIGKILL a second later.
    cap(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)
    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    # In a user namespace of its own the count is the sandbox's threads (root is exempt).
    cap(resource.RLIMIT_NPROC, limits["threads"])
    return "cpu {cpu_seconds}s, memory {memory_bytes}, file {file_size_bytes}, " \
           "threads {threads}".format(**limits)


def _forget_ctypes():
    """Unload ctypes after the kernel layers used it, so importing it again is an audited import
    the guard refuses."""
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _disable_fork_exec():
    """subprocess forks through _posixsubprocess.fork_exec, which raises no audit event. This
    only makes the error clear: re-importing the module brings it back, and seccomp refuses
    the fork and the exec anyway."""
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed")

    _posixsubprocess.fork_exec = fork_exec


def _make_realpath(lstat, readlink, getcwd, permission):
    """realpath() from C functions bound now: the model's code can monkeypatch os.path and
    posixpath, but not these references."""

    def realpath(path):
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        pending = [p for p in path.split("/") if p not in ("", ".")]
        resolved = []
        links = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/" + "/".join([*resolved, part])
            try:
                mode = lstat(candidate).st_mode
            except OSError:
                resolved.append(part)  # does not exist (yet): resolve the rest lexically
                continue
            if mode & 0o170000 == 0o120000:  # a symbolic link
                links += 1
                if links > 40:
                    raise permission("sandbox: too many symbolic links")
                target = readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            resolved.append(part)
        return "/" + "/".join(resolved)

    return realpath


def _install_guard(scratch, read_dirs, read_files, rw_files):
    """The audit hook. Everything it needs is bound now, as default values: immutable data,
    C functions and builtins, so patching modules or builtins later cannot change its answers."""
    import _socket
    import builtins
    import pathlib

    def make_hook(
        scratch=scratch,
        read_roots=tuple(read_dirs),
        read_only=frozenset(read_files),
        read_write=frozenset(rw_files),
        realpath=_make_realpath(os.lstat, os.readlink, os.getcwd, PermissionError),  # noqa: B008
        fspath=os.fspath,
        family_of=_socket.socket.__dict__["family"].__get__,
        af_unix=_socket.AF_UNIX,
        write_flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
        isinstance=builtins.isinstance,
        type=builtins.type,
        path_types=frozenset((builtins.str, builtins.bytes, pathlib.PosixPath,
                              pathlib.PurePosixPath, os.DirEntry)),
        len=builtins.len,
        str=builtins.str,
        bytes=builtins.bytes,
        int=builtins.int,
        base_socket=_socket.socket,
        refuse=frozenset((
            "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
            "subprocess.Popen", "pty.spawn", "os.startfile",
            "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
            "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.cdata/buffer",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents",
            "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
            "function.__new__", "os.kill", "os.killpg", "signal.pthread_kill",
        )),
        network_events=frozenset((
            "socket.gethostbyname", "socket.gethostbyaddr", "socket.getaddrinfo",
            "socket.getnameinfo", "socket.sethostname",
        )),
        refused_modules=frozenset(("ctypes", "_ctypes", "_xxsubinterpreters")),
        path_events=frozenset((
            "os.chdir", "os.chmod", "os.chown", "os.link", "os.listdir", "os.mkdir",
            "os.remove", "os.rename", "os.rmdir", "os.scandir", "os.symlink", "os.truncate",
            "os.utime", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
            "shutil.copytree", "shutil.move", "shutil.rmtree", "os.setxattr",
            "os.removexattr", "os.listxattr", "os.getxattr", "os.chflags", "os.mkfifo",
            "os.mknod", "glob.glob", "glob.glob/2",
        )),
        read_events=frozenset(("os.listdir", "os.scandir", "os.getxattr", "os.listxattr",
                               "glob.glob", "glob.glob/2")),
        socket_events=frozenset(("socket.connect", "socket.bind", "socket.sendto",
                                 "socket.sendmsg")),
        permission=PermissionError,
    ):
        def as_text(path):
            """The path as text, or None for a file descriptor (opened under these rules).

            Only types whose path cannot change between this check and the system call are
            accepted: an object with its own __fspath__ could answer differently the second
            time."""
            kind = type(path)
            if kind is int:
                return None
            if kind not in path_types:
                raise permission(f"sandbox: paths must be str, bytes or pathlib paths, "
                                 f"not {kind.__name__}")
            path = fspath(path)
            if kind is bytes or isinstance(path, bytes):
                path = path.decode("utf-8", "surrogateescape")
            return path or "."

        def inside(path, write):
            text = as_text(path)
            if text is None:
                return True
            real = realpath(text)
            if real == scratch or real.startswith(scratch + "/") or real in read_write:
                return True
            if write:
                return False
            if real in read_only:
                return True
            for root in read_roots:
                if real == root or real.startswith(root + "/"):
                    return True
            return False

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                if path is None:
                    return
                write = False
                if isinstance(mode, str):
                    write = "w" in mode or "a" in mode or "x" in mode or "+" in mode
                elif isinstance(flags, int):
                    write = (flags & write_flags) != 0
                if not inside(path, write):
                    raise permission(f"sandbox: access to {path!r} is not allowed")
                return
            if event in refuse:
                raise permission(f"sandbox: {event} is not allowed")
            if event in network_events:
                raise permission(f"sandbox: network access is not allowed ({event})")
            if event == "import":
                if args[0].split(".")[0] in refused_modules:
                    raise permission(f"sandbox: importing {args[0]} is not allowed")
                return
            if event == "socket.__new__":
                if args[1] != af_unix:
                    raise permission("sandbox: network access is not allowed")
                return
            if event in socket_events:
                sock = args[0]
                address = args[1] if len(args) > 1 else None
                if not isinstance(sock, base_socket) or family_of(sock) != af_unix:
                    raise permission("sandbox: network access is not allowed")
                if isinstance(address, (str, bytes)) and address[:1] not in ("\x00", b"\x00") \
                        and inside(address, True):
                    return
                raise permission("sandbox: this socket address is not allowed")
            if event in path_events:
                write = event not in read_events
                for arg in args[:2]:
                    if type(arg) in path_types and not inside(arg, write):
                        raise permission(f"sandbox: access to {arg!r} is not allowed")
                return

        return hook

    sys.addaudithook(make_hook())


class Status:
    """The status pipe: JSON lines to the agent, closed before the model's code runs."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, **event):
        if self.fd is not None:
            os.write(self.fd, (json.dumps(event) + "\n").encode())

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_config():
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return json.loads(b"".join(chunks))


def _die_with(kernel, lifeline):
    """SIGKILL when the parent goes; if it went already (the lifeline pipe is at EOF), stop."""
    kernel.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    readable, _, _ = select.select([lifeline], [], [], 0)
    if readable:
        os._exit(70)


def _wait_and_exit(pid, status):
    """Wait for ``pid``, report how it ended (when given the status pipe) and end likewise."""
    while True:
        try:
            _, code = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(code):
        if status is not None:
            status.send(event="exit", signal=os.WTERMSIG(code))
        os._exit(128 + os.WTERMSIG(code))
    if status is not None:
        status.send(event="exit", code=os.WEXITSTATUS(code))
    os._exit(os.WEXITSTATUS(code))


def _refuse(status, layers, missing, absent):
    status.send(event="refused", layers=layers,
                missing={name: missing.get(name, "unavailable") for name in absent})
    os._exit(70)


def main():
    config = _read_config()
    status = Status(config["status_fd"])
    wanted = config["layers"]
    strict = config["strict"]
    layers, missing = {}, {}
    kernel = Kernel()

    # The agent's death kills the sandbox (checked after arming, against a race).
    kernel.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parent"]:
        os._exit(70)

    read_dirs = [os.path.realpath(p) for p in sys.path if os.path.isdir(p)]
    read_dirs += [p for p in config["read_dirs"] if os.path.isdir(p)]
    read_files = [p for p in config["read_files"] if os.path.exists(p)]
    rw_files = [p for p in config["rw_files"] if os.path.exists(p)]
    as_root = os.getuid() == 0
    namespaces = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS \
        | CLONE_NEWCGROUP
    scratch_options = "size={},nr_inodes={},mode=0700".format(config["scratch_bytes"],
                                                              config["scratch_inodes"])
    mounted = False
    proc = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def build_root(owner):
        nonlocal mounted
        try:
            _build_root(kernel, config["base"], read_dirs, read_files + rw_files,
                        f"{scratch_options},uid={owner},gid={owner}")
            mounted = True
            layers["mount"] = f"own root: read-only libraries, {config['scratch_bytes']} byte tmpfs"
        except OSError as error:
            missing["mount"] = str(error)

    # 1-4: namespaces and the new root. Root builds the root first (it can traverse the agent's
    # directories), then becomes nobody; an unprivileged agent gets its powers from the new user
    # namespace and builds the root inside it.
    if as_root and wanted["mount"]:
        try:
            kernel.unshare(CLONE_NEWNS)
            build_root(ROOT_FALLBACK_UID)
        except OSError as error:
            missing["mount"] = str(error)
    if as_root and mounted:
        _become_root_fallback_user()
        kernel.prctl(PR_SET_DUMPABLE, 1)  # the new user namespace's maps are written via /proc
    in_userns = False
    if wanted["namespaces"]:
        flags = namespaces | (CLONE_NEWNS if mounted or wanted["mount"] else 0)
        try:
            uid, gid = os.getuid(), os.getgid()
            kernel.unshare(flags)
            in_userns = True
            _map_ids(proc, uid, gid)
            layers["network"] = "own namespace (no interfaces)"
            if uid == 0:
                # Root without its new root keeps host uid 0 (it could not read the libraries
                # as nobody): namespaces, but not a separate user.
                missing["user"] = "host uid 0 kept (root without the mount layer)"
            elif as_root:
                layers["user"] = f"host uid {ROOT_FALLBACK_UID}, uid {SANDBOX_UID} inside"
            else:
                layers["user"] = f"uid {SANDBOX_UID} in its own user namespace"
        except OSError as error:
            for name in ("user", "pid", "network"):
                missing[name] = str(error)
    else:
        for name in ("user", "pid", "network"):
            missing[name] = "disabled"
    if wanted["mount"] and not mounted and in_userns and not as_root:
        build_root(SANDBOX_UID)
    os.close(proc)  # a way out of the new root: closed before anything else runs
    if not wanted["mount"]:
        missing["mount"] = "disabled"
    scratch = SCRATCH if mounted else config["host_scratch"]
    absent = [name for name in ("user", "network", "mount") if name not in layers]
    absent += [] if in_userns else ["pid"]
    if scratch is None or (strict and absent):
        _refuse(status, layers, missing, absent or ["mount"])

    # 2: a new PID namespace. Its pid 1 only waits for the program (pid 2) and reports how it
    # ended; the monitor outside it waits for pid 1 and is what the agent kills at the deadline.
    pid_namespace = False
    if in_userns:
        lifeline_read, lifeline_write = os.pipe()
        init = os.fork()
        if init:
            os.close(lifeline_read)
            status.send(event="init", pid=init)
            _wait_and_exit(init, None)
        os.close(lifeline_write)
        _die_with(kernel, lifeline_read)
        os.close(lifeline_read)
        if os.getpid() == 1:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            program = os.fork()
            if program:
                _wait_and_exit(program, status)
            pid_namespace = True
            layers["pid"] = "own namespace (the program is pid 2 under a waiting pid 1)"
        else:
            missing["pid"] = "not pid 1 after fork"
        os.setsid()

    os.chdir(scratch)
    os.environ["HOME"] = os.environ["TMPDIR"] = scratch
    for name, text in config["files"].items():
        with open(os.path.join(scratch, name), "w", encoding="utf-8") as f:
            f.write(text)

    # 5-8: capabilities, Landlock, limits, seccomp (last of the kernel layers: it refuses the
    # calls the ones before it make).
    try:
        _drop_capabilities(kernel)
    except OSError as error:
        missing["user"] = f"capabilities kept ({error})"
    if wanted["landlock"]:
        try:
            layers["landlock"] = _landlock(kernel, scratch, read_dirs, read_files, rw_files)
        except OSError as error:
            missing["landlock"] = str(error)
    else:
        missing["landlock"] = "disabled"
    try:
        layers["limits"] = _set_limits(config["limits"])
    except (OSError, ValueError) as error:
        missing["limits"] = str(error)
    if wanted["seccomp"] and config["seccomp"]:
        program = config["seccomp"]["pid_namespace" if pid_namespace else "plain"]
        try:
            layers["seccomp"] = _seccomp(kernel, program)
        except OSError as error:
            missing["seccomp"] = str(error)
    else:
        missing["seccomp"] = "disabled" if not wanted["seccomp"] else config["seccomp_error"]
    _forget_ctypes()
    if wanted["guard"]:
        _disable_fork_exec()
        _install_guard(scratch, read_dirs, read_files, rw_files)
        layers["guard"] = "audit hook"
    else:
        missing["guard"] = "disabled"

    absent = [name for name in STRICT_LAYERS if name not in layers]
    if strict and absent:
        _refuse(status, layers, missing, absent)
    status.send(event="ready", layers=layers, missing=missing)
    status.close()
    path = os.path.join(scratch, config["main"])
    code = compile(config["code"], config["main"], "exec")
    sys.argv = [config["main"]]
    sys.path.insert(0, scratch)
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
    return code, namespace


_code, _namespace = main()
for _name in [n for n in list(globals()) if not n.startswith("__")]:
    if _name not in ("_code", "_namespace"):
        del globals()[_name]
del _name
exec(_code, _namespace)
