"""The files the project writes: each one atomically (a temporary file beside it, then a
rename, so a crash leaves the old file or the new one, whole), a folder held by one process at
a time (an OS lock, gone with the process), and a full disk or a read-only folder said in one
line. The temporary file's name (.NAME.cnn_gan.HOST.PID.tmp) lets the next start on that host
remove a killed writer's leftovers, and no file of anyone else."""
import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import sys
import time

from utils.errors import UserError

LOCK_NAME = ".cnn_gan.lock"
LOCKS = re.compile(r"^\.cnn_gan(\.[\w-]+)?\.lock$")  # every lock file this project makes
TEMP = re.compile(r"^\..+\.cnn_gan\.([A-Za-z0-9-]+)\.(\d+)\.tmp(\.[A-Za-z0-9]+)?$")


class NoSpace(UserError):
    """The disk (or the quota) is full; what was being written was not."""


def host_label():
    """This machine's name as it goes into a temporary file's (a process id is per host)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def temp_path(path, suffix=""):
    """Where path is written first: .NAME.cnn_gan.HOST.PID.tmp in the same folder (a rename is
    atomic only within one file system); suffix keeps an extension a writer needs."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.cnn_gan.{host_label()}.{os.getpid()}.tmp{suffix}")


def size_limit():
    """The largest file this process may write (ulimit -f), in bytes, or None for no limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def too_large(path):
    """The file-size limit's one line: the disk is not full, the shell's limit is too low."""
    return UserError(f"cannot write {path}: it would pass this shell's file-size limit "
                     f"(ulimit -f: {size_limit()} bytes), not a full disk; raise the limit "
                     "(ulimit -f unlimited, or ask the cluster's admins) and run again")


def write_failure(path, message):
    """A write that failed without an errno (torch's zip writer's "file write failed"): a full
    disk when the folder has little room left, else the file-size limit if set, else as is."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        free = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        free = None
    if free is not None and free < 64 * 2**20:
        return NoSpace(f"no space left on the device to write {path} ({free // 2**20} MiB free)")
    if size_limit() is not None:
        return too_large(path)
    return UserError(f"could not write {path} ({message[:80]})")


def io_error(e, path):
    """An OSError while writing path, as the one line a user can act on."""
    if e.errno == errno.EFBIG:
        return too_large(path)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left on the device to write {path}")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return UserError(f"cannot write {path}: {e.strerror} (a read-only folder, or another "
                         "user's); choose a folder you can write to")
    if e.errno == errno.ENAMETOOLONG:
        return UserError(f"cannot write {path}: the path is too long for this file system")
    return UserError(f"cannot write {path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_path(path, suffix="", durable=True):
    """Yield a temporary path to write to; on success it replaces path, on any failure it is
    removed. durable: flushed to the disk before the rename (checkpoints need it)."""
    tmp = temp_path(path, suffix)
    try:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise io_error(e, path) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path, default=None, kind=None, remedy="delete it and make it again"):
    """A JSON file the project wrote, or default when it is missing; a damaged one, or one
    whose top level is not of `kind` (dict: an object), is one line naming it and the remedy."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}): {remedy}") from None
    if kind is not None and not isinstance(data, kind):
        what = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise UserError(f"{path} is damaged: it should hold {what}, not "
                        f"{type(data).__name__}; {remedy}")
    return data


def update_json(path, key, value):
    """Set one key of a JSON object file (read, change, write atomically), holding a lock so
    that two processes recording figures into the same file do not lose each other's."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with short_lock(os.path.join(folder, f".{name}.lock")):
        try:
            data = read_json(path, {}, kind=dict)
        except UserError as e:  # rebuilt from this record on: the others are remade later
            from utils.console import info

            info(f"warning: {e}; starting it afresh with '{key}'")
            data = {}
        data[key] = value
        atomic_write_json(path, data)


def file_digest(path):
    """A file's content hash (blake2b, 16 hex digits), equal to bytes_digest of its bytes."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data):
    """file_digest of bytes already read."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder):
    """Remove the temporary files that killed writers of this host left in folder (another
    host's process cannot be asked whether it lives); returns their names."""
    removed, host = [], host_label()
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = TEMP.match(name)
        pid = int(m.group(2)) if m and m.group(1) == host else None
        if pid is not None and pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


# ----------------------------------------------------------------------------- folders

def check_writable_folder(folder, flag="--out_dir"):
    """The folder, created if missing, is one we can write to; or one line saying why not."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{flag} {folder} is a file, not a folder")
    if os.path.islink(folder) and not os.path.exists(folder):
        raise UserError(f"{flag} {folder} is a link to {os.readlink(folder)}, which does not "
                        "exist: make that folder, or choose another")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = temp_path(os.path.join(folder, "probe"))
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise io_error(e, folder) from None


class FolderLock:
    """An exclusive OS lock (flock) on FOLDER/.cnn_gan.lock: the kernel releases it however the
    process ends, so a kill -9 leaves no stale lock. The file says who holds it, for the message
    a second process gets, and is removed when its holder lets go."""

    def __init__(self, folder, what="run", name=None):
        """name: a lock of its own in the folder (.cnn_gan.NAME.lock), so that processes that
        write disjoint files (the classifier's and the GAN's trainer) share a folder."""
        self.folder, self.what, self.file = folder, what, None
        self.path = os.path.join(folder, LOCK_NAME if name is None else f".cnn_gan.{name}.lock")

    def acquire(self):
        import fcntl

        while True:
            try:
                f = open(self.path, "a+", encoding="utf-8")
            except OSError as e:
                raise io_error(e, self.path) from None
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise UserError(f"{self.folder} is in use by another {self.what} ({holder}): "
                                "wait for it to end, or choose another folder") from None
            except OSError:
                break  # a file system without locks (some network mounts): go on unlocked
            try:  # the holder before us may have removed the file as we opened it: retry
                if os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv[:1])}")
        f.flush()
        self.file = f
        return self

    def release(self):
        if self.file is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)  # while still holding it: see acquire
            self.file.close()  # closing the file releases the lock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def short_lock(path, timeout=60.0):
    """A blocking lock on path for a few file operations (waits up to timeout seconds)."""
    import fcntl

    try:
        f = open(path, "a+")
    except OSError as e:
        raise io_error(e, path) from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"{path} stayed locked for {timeout:.0f} s by another "
                                    "process") from None
                time.sleep(0.05)
            except OSError:
                break  # no locks on this file system
        yield
    finally:
        f.close()
