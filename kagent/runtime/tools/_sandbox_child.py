"""The first code a sandboxed run executes, in the child interpreter (``python -I -S -c``).

It is passed as source text, not imported: the child runs isolated (``-I -S``), without
kagent or site-packages on its path, so this file uses the standard library only. It locks the
process down in layers, strongest first, and only then runs the model's code:

1. a new network namespace (no interfaces but a down loopback): as root directly, otherwise
   inside a new user namespace that maps our own uid and gid — unprivileged on most kernels;
2. Landlock (Linux >= 5.13, unprivileged): the kernel refuses any file access outside the
   scratch directory except reading the Python standard library, the system's shared libraries
   and a few device files; on ABI >= 4 also every TCP connect and bind; on ABI >= 6 abstract
   Unix sockets and signals to processes outside the sandbox;
3. no new privileges, and every capability dropped;
4. resource limits: CPU time, address space, file size, open files, processes;
5. an audit hook (PEP 578) that refuses sockets other than Unix ones inside the scratch
   directory, process creation, ctypes, and file access outside the allowed directories. Audit
   hooks cannot be removed, and the hook keeps its state in immutable closure values, so code
   that cannot reach the hook object (introspection events are refused too) cannot change it.
   This layer is what remains where the kernel offers none of the above.

The first line written to stderr reports which layers took effect, for the parent to log.
"""

import json
import os
import sys

STATUS_MARKER = "\x00kagent-sandbox:"

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Landlock filesystem rights, by the ABI version that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


def _enter_network_namespace(status):
    ctypes, libc = _libc()
    if libc.unshare(CLONE_NEWNET) == 0:
        status["network"] = "namespace"
        return
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        status["network"] = f"shared (no namespace: {os.strerror(ctypes.get_errno())})"
        return
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError:
        pass  # unmapped ids still work for the scratch directory we own; nothing else is allowed
    status["network"] = "user+network namespace"


def _landlock(scratch, read_dirs, read_files, rw_files, status):
    ctypes, libc = _libc()
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        status["landlock"] = f"unavailable ({os.strerror(ctypes.get_errno())})"
        return
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
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        status["landlock"] = f"failed ({os.strerror(ctypes.get_errno())})"
        return
    file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE
    if abi >= 3:
        file_rights |= FS_TRUNCATE
    if abi >= 5:
        file_rights |= FS_IOCTL_DEV
    scratch_rights = fs & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_EXECUTE)
    rules = [(scratch, scratch_rights)]
    # No EXECUTE anywhere: execve is refused by the kernel (shared libraries only need READ).
    rules += [(d, FS_READ_FILE | FS_READ_DIR) for d in read_dirs]
    rules += [(f, FS_READ_FILE) for f in read_files]
    rules += [(f, FS_READ_FILE | FS_WRITE_FILE | (file_rights & FS_TRUNCATE)) for f in rw_files]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            rule = PathBeneath(rights, fd)
            libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                         ctypes.byref(rule), 0)
        finally:
            os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        status["landlock"] = f"failed (no_new_privs: {os.strerror(ctypes.get_errno())})"
        return
    if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
        status["landlock"] = f"failed ({os.strerror(ctypes.get_errno())})"
        return
    os.close(ruleset)
    extras = (", tcp" if net else "") + (", unix+signals" if scoped else "")
    status["landlock"] = f"abi {abi} (files{extras})"


def _drop_capabilities(status):
    ctypes, libc = _libc()
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    capset = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine)
    ok = capset is not None and libc.syscall(capset, ctypes.byref(header), data) == 0
    error = os.strerror(ctypes.get_errno())
    status["capabilities"] = "dropped" if ok else f"kept ({error})"


def _set_limits(limits, status):
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
    cap(resource.RLIMIT_NPROC, limits["processes"])
    status["limits"] = "set"


def _forget_ctypes():
    """Unload ctypes after the kernel layers used it, so importing it again is an audited import
    the guard refuses (a loaded ctypes would give the model's code raw memory access)."""
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _disable_fork_exec():
    """subprocess forks through _posixsubprocess.fork_exec, which raises no audit event."""
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


def main():
    config = json.loads(sys.argv[1])
    scratch = config["scratch"]
    read_dirs = [os.path.realpath(p) for p in sys.path if os.path.isdir(p)]
    read_dirs += [os.path.realpath(p) for p in config["read_dirs"] if os.path.isdir(p)]
    read_files = [p for p in config["read_files"] if os.path.exists(p)]
    rw_files = [p for p in config["rw_files"] if os.path.exists(p)]
    status = {}
    layers = config["layers"]
    if layers.get("namespaces"):
        _enter_network_namespace(status)
    if layers.get("landlock"):
        _landlock(scratch, read_dirs, read_files, rw_files, status)
    if layers.get("namespaces") or layers.get("landlock"):
        _drop_capabilities(status)
    _set_limits(config["limits"], status)
    _forget_ctypes()
    if layers.get("guard"):
        _disable_fork_exec()
        _install_guard(scratch, read_dirs, read_files, rw_files)
        status["guard"] = "audit hook"
    sys.stderr.write(STATUS_MARKER + json.dumps(status) + "\n")
    sys.stderr.flush()
    os.chdir(scratch)
    path = os.path.join(scratch, config["main"])
    with open(path, encoding="utf-8") as f:
        source = f.read()
    code = compile(source, config["main"], "exec")
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
