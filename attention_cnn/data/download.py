"""Robust downloads and safe tar extraction for the fetch stages.

:func:`download` fetches a URL (or copies a local path / ``file://`` URL) into
``dest`` through ``dest.part``, retrying transient failures with exponential
backoff, and renames the result into place only when it is complete and its
SHA-256 matches.  :func:`safe_extract_tar` unpacks a tar archive after
checking every member, so a hostile or broken archive can neither write
outside the destination nor fill the disk, and a failed extraction leaves
nothing behind.

Every user-fixable problem is raised as a one-line :class:`StageError`.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zlib
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
from tqdm import tqdm

from attention_cnn.common import StageError, atomic_dir

CHUNK_BYTES = 1 << 16
MAX_RETRY_AFTER_S = 60.0

# Retried: the server may recover.  Any other 4xx is the caller's problem.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class _Retryable(Exception):
    """A transient failure of one attempt (network error, 5xx/429, short body)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _redact(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _one_line(url)
    if parts.username is None and parts.password is None:
        return _one_line(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return _one_line(urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment)))


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _local_source(url: str) -> Path | None:
    """The local path ``url`` names (plain path or ``file://``), or None for a remote URL."""
    if url.startswith("file:"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StageError(f"download failed: {_redact(url)}: file:// URLs with a host are not supported; use file:///absolute/path")
        return Path(urllib.request.url2pathname(parts.path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        return None
    return Path(url)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    timeout_s: float = 30.0,
    retries: int = 4,
    backoff_s: float = 1.0,
    progress: bool = True,
    session: requests.Session | None = None,
    mismatch_hint: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``url`` is an ``http(s)://`` URL, a ``file://`` URL or a local path (then the
    file is copied).  The data goes to ``dest.part`` first and is renamed to
    ``dest`` only once complete and, when ``sha256`` is given, verified; a
    leftover ``.part`` from an earlier run is discarded.  HTTP downloads are
    streamed with ``timeout_s`` as both connect and read timeout; connection
    errors, timeouts, short bodies, HTTP 429 and 5xx are retried ``retries``
    times (so at most ``retries + 1`` attempts) after ``backoff_s``, doubling
    each time (a numeric ``Retry-After`` header, capped at 60 s, can lengthen
    the wait).  Other HTTP errors fail at once.  A checksum mismatch deletes
    the data and fails without retrying.
    """
    dest = Path(dest)
    if retries < 0:
        raise ValueError("retries must be >= 0")
    expected = _normalise_digest(sha256, url) if sha256 is not None else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    part.unlink(missing_ok=True)  # leftovers of an interrupted run: start from zero

    try:
        local = _local_source(url)
        if local is not None:
            actual = _copy_local(local, part, url)
        else:
            actual = _download_http(url, part, timeout_s=timeout_s, retries=retries,
                                    backoff_s=backoff_s, progress=progress, session=session,
                                    label=dest.name)
        if expected is not None and actual != expected:
            part.unlink(missing_ok=True)
            hint = mismatch_hint or ("the source file is left as it is; check that it is the right file and the "
                                     "expected checksum" if local is not None else
                                     "the download was discarded; check the URL and the expected checksum")
            raise StageError(f"checksum mismatch for {_redact(url)}: expected sha256 {expected}, got {actual}; {hint}")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _normalise_digest(sha256: str, url: str) -> str:
    digest = sha256.strip().lower()
    if digest.startswith("sha256:"):
        digest = digest[len("sha256:"):]
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise StageError(f"download of {_redact(url)}: expected checksum {sha256!r} is not a 64-digit hex SHA-256")
    return digest


def _copy_local(src: Path, part: Path, url: str) -> str:
    if not src.is_file():
        what = "is not a regular file" if src.exists() else "no such file"
        raise StageError(f"download failed: {_redact(url)}: {what}; check the path")
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(part, "wb") as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as exc:
        raise StageError(f"download failed: {_redact(url)}: cannot copy to {part} ({_one_line(exc)})") from None
    return digest.hexdigest()


def _download_http(url: str, part: Path, *, timeout_s: float, retries: int, backoff_s: float,
                   progress: bool, session: requests.Session | None, label: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise StageError(f"download failed: {_redact(url)}: unsupported URL scheme {scheme!r}; use http(s)://, file:// or a local path")
    own_session = session is None
    sess = requests.Session() if own_session else session
    attempts = retries + 1
    try:
        for attempt in range(1, attempts + 1):
            try:
                return _attempt(sess, url, part, timeout_s=timeout_s, progress=progress, label=label)
            except _Retryable as exc:
                part.unlink(missing_ok=True)
                if attempt == attempts:
                    noun = "attempt" if attempts == 1 else "attempts"
                    raise StageError(
                        f"download failed: {_redact(url)}: {exc} after {attempts} {noun}; "
                        "check the URL or your network"
                    ) from None
                wait = backoff_s * (2 ** (attempt - 1))
                if exc.retry_after_s is not None:
                    wait = max(wait, min(exc.retry_after_s, MAX_RETRY_AFTER_S))
                if progress:
                    tqdm.write(f"download {label}: {exc}; retrying in {wait:.1f}s (attempt {attempt + 1}/{attempts})",
                               file=sys.stderr)
                time.sleep(wait)
    finally:
        if own_session:
            sess.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _received(resp: requests.Response, written: int, total: int | None) -> str:
    """'received N of M bytes', counting what reached the socket (the last chunk may be lost)."""
    try:
        got = max(int(resp.raw.tell()), written)
    except (AttributeError, TypeError, ValueError):
        got = written
    return f"received {got} of {total} bytes" if total is not None else f"received {got} bytes"


def _attempt(sess: requests.Session, url: str, part: Path, *, timeout_s: float, progress: bool, label: str) -> str:
    """One GET into ``part``; returns the SHA-256 hex digest of what was written."""
    try:
        # identity: we want the file's bytes exactly, and Content-Length to count them.
        resp = sess.get(url, stream=True, timeout=(timeout_s, timeout_s),
                        headers={"Accept-Encoding": "identity"})
    except requests.Timeout:
        raise _Retryable(f"timed out (limit {timeout_s:g}s)") from None
    except requests.ConnectionError as exc:
        raise _Retryable(f"connection error ({_one_line(exc, 200)})") from None
    except requests.RequestException as exc:  # invalid URL and the like: retrying cannot help
        raise StageError(f"download failed: {_redact(url)}: {_one_line(exc, 200)}; check the URL") from None

    with resp:
        status = resp.status_code
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status} {resp.reason or ''}".strip(), _retry_after(resp))
        if not 200 <= status < 300:
            raise StageError(
                f"download failed: {_redact(url)}: HTTP {status} {resp.reason or ''}".rstrip()
                + " (not retried); check the URL"
            )
        total: int | None = None
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            total = int(length)
        encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")

        digest = hashlib.sha256()
        written = 0
        try:
            with open(part, "wb") as fh, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not progress, leave=False, mininterval=0.5,
            ) as bar:
                for chunk in resp.iter_content(chunk_size=CHUNK_BYTES):
                    if not chunk:
                        continue
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except (requests.ConnectionError, requests.Timeout) as exc:
            if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
                raise _Retryable(f"read timed out mid-download (limit {timeout_s:g}s)") from None
            raise _Retryable(f"connection lost ({_received(resp, written, total)}): {_one_line(exc, 160)}") from None
        except requests.exceptions.ChunkedEncodingError:
            raise _Retryable(f"connection closed early ({_received(resp, written, total)})") from None
        except requests.exceptions.ContentDecodingError as exc:
            raise _Retryable(f"cannot decode response ({_one_line(exc, 160)})") from None
        except OSError as exc:
            raise StageError(f"download failed: {_redact(url)}: cannot write {part} ({_one_line(exc, 160)})") from None

        received = resp.raw.tell() if encoded else written
        if total is not None and received != total:
            raise _Retryable(f"incomplete response (received {received} of {total} bytes)")
    return digest.hexdigest()


# --------------------------------------------------------------------------- tar


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
_MAX_LINK_DEPTH = 40


def _norm_member_name(archive: Path, name: str) -> str:
    """The member's path relative to dest ('a/b'), refusing absolute names and '..'."""
    if "\x00" in name:
        raise StageError(f"unsafe archive {archive}: member {name!r} has a NUL byte in its name; refusing to extract")
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        raise StageError(f"unsafe archive {archive}: member {name!r} has an absolute path; refusing to extract")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StageError(f"unsafe archive {archive}: member {name!r} has a '..' component; refusing to extract")
    return "/".join(parts)


class _Plan:
    """The archive's members, checked, in extraction order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, tarfile.TarInfo]] = []
        self.kinds: dict[str, str] = {}      # rel path -> 'file' | 'dir' | 'symlink' | 'hardlink'
        self.symlinks: dict[str, str] = {}   # rel path -> link target (as stored)
        self.sizes: dict[str, int] = {}      # rel path of a file or hardlink -> bytes
        self.total_bytes = 0


def _resolve_inside(rel_link: str, target: str, symlinks: dict[str, str]) -> bool:
    """Whether symlink ``rel_link -> target`` resolves inside dest, following the archive's own symlinks."""
    if target.startswith("/") or target.startswith("\\") or re.match(r"^[A-Za-z]:", target):
        return False
    stack: list[str] = rel_link.split("/")[:-1]  # the link's folder
    pending = [p for p in target.replace("\\", "/").split("/") if p not in ("", ".")]
    hops = 0
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            if not stack:
                return False
            stack.pop()
            continue
        candidate = "/".join(stack + [comp])
        if candidate in symlinks:
            hops += 1
            if hops > _MAX_LINK_DEPTH:
                return False  # a loop: refuse rather than guess
            inner = symlinks[candidate]
            if inner.startswith("/") or inner.startswith("\\") or re.match(r"^[A-Za-z]:", inner):
                return False
            pending = [p for p in inner.replace("\\", "/").split("/") if p not in ("", ".")] + pending
            continue
        stack.append(comp)
    return True


def _plan(tf: tarfile.TarFile, archive: Path, max_members: int, max_total_bytes: int) -> _Plan:
    plan = _Plan()
    count = 0
    for m in tf:
        count += 1
        if count > max_members:
            raise StageError(
                f"unsafe archive {archive}: more than {max_members} members (at {m.name!r}); "
                "refusing to extract - raise max_members if the archive is trusted"
            )
        rel = _norm_member_name(archive, m.name)
        if not rel:
            if m.isdir():
                continue  # "./" itself
            raise StageError(f"unsafe archive {archive}: member {m.name!r} has an empty path; refusing to extract")
        # No member may live under a symlink from this archive: writing through a
        # link is how "a -> ." tricks escape the destination.
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            kind = plan.kinds.get(prefix)
            if kind is not None and kind != "dir":
                raise StageError(
                    f"unsafe archive {archive}: member {m.name!r} lies under {prefix!r}, which is a {kind}; refusing to extract"
                )
        previous = plan.kinds.get(rel)

        if m.isreg():
            kind = "file"
            plan.sizes[rel] = m.size
            plan.total_bytes += m.size
        elif m.isdir():
            kind = "dir"
        elif m.issym():
            kind = "symlink"
            if not _resolve_inside(rel, m.linkname, plan.symlinks):
                raise StageError(
                    f"unsafe archive {archive}: member {m.name!r} is a symlink to {m.linkname!r}, outside the destination; refusing to extract"
                )
        elif m.islnk():
            kind = "hardlink"
            try:
                target = _norm_member_name(archive, m.linkname)
            except StageError:
                raise StageError(
                    f"unsafe archive {archive}: member {m.name!r} is a hardlink to {m.linkname!r}, outside the destination; refusing to extract"
                ) from None
            if plan.kinds.get(target) not in ("file", "hardlink"):
                raise StageError(
                    f"unsafe archive {archive}: member {m.name!r} is a hardlink to {m.linkname!r}, which is not a file earlier in the archive; refusing to extract"
                )
            plan.sizes[rel] = plan.sizes[target]
            plan.total_bytes += plan.sizes[target]
        elif m.ischr() or m.isblk() or m.isfifo():
            what = "character device" if m.ischr() else "block device" if m.isblk() else "FIFO"
            raise StageError(f"unsafe archive {archive}: member {m.name!r} is a {what}; refusing to extract")
        else:
            raise StageError(f"unsafe archive {archive}: member {m.name!r} has unsupported type {m.type!r}; refusing to extract")

        if previous is not None and (previous != kind or kind in ("symlink", "hardlink")):
            raise StageError(
                f"unsafe archive {archive}: member {m.name!r} appears twice ({previous} and {kind}); refusing to extract"
            )
        if plan.total_bytes > max_total_bytes:
            raise StageError(
                f"unsafe archive {archive}: unpacked size exceeds {max_total_bytes} bytes (at {m.name!r}); "
                "refusing to extract - raise max_total_bytes if the archive is trusted"
            )
        for i in range(1, len(parts)):  # implicit parent folders
            plan.kinds.setdefault("/".join(parts[:i]), "dir")
        plan.kinds[rel] = kind
        if kind == "symlink":
            plan.symlinks[rel] = m.linkname
        plan.entries.append((rel, m))
    return plan


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def safe_extract_tar(
    archive: Path,
    dest: Path,
    *,
    max_members: int = 200_000,
    max_total_bytes: int = 4 << 30,
) -> list[str]:
    """Extract a tar (optionally gzip/bz2/xz compressed) into ``dest``, safely.

    Every member is checked before anything is written: absolute names, ``..``
    components, symlinks or hardlinks that resolve outside ``dest``, devices,
    FIFOs, more than ``max_members`` members or more than ``max_total_bytes``
    unpacked bytes are refused with a one-line :class:`StageError`.  The
    archive is unpacked into a temporary sibling of ``dest`` that replaces
    ``dest`` only on success, so a failure leaves ``dest`` as it was.  Hardlinks
    become copies; file modes keep only the permission bits (no setuid,
    nothing world-writable).  Returns the sorted relative paths of the regular
    files extracted (hardlink copies included).
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise StageError(f"archive {archive} not found (or not a file); download it first")
    try:
        tf = tarfile.open(archive, mode="r:*")
    except _READ_ERRORS as exc:
        raise StageError(f"{archive}: not a readable tar archive ({_one_line(exc, 160)}); delete it and download it again") from None
    except OSError as exc:
        raise StageError(f"{archive}: cannot open ({_one_line(exc, 160)})") from None

    with tf:
        try:
            plan = _plan(tf, archive, max_members, max_total_bytes)
        except _READ_ERRORS as exc:
            raise StageError(f"{archive}: corrupt or truncated tar archive ({_one_line(exc, 160)}); delete it and download it again") from None
        files: set[str] = set()
        with atomic_dir(dest) as tmp:
            root_real = os.path.realpath(tmp)
            try:
                _extract(tf, archive, plan, Path(tmp), root_real, files)
            except _READ_ERRORS as exc:
                raise StageError(f"{archive}: corrupt or truncated tar archive ({_one_line(exc, 160)}); delete it and download it again") from None
            except OSError as exc:
                raise StageError(f"cannot extract {archive} into {dest}: {_one_line(exc, 200)}") from None
    return sorted(files)


def _extract(tf: tarfile.TarFile, archive: Path, plan: _Plan, root: Path, root_real: str, files: set[str]) -> None:
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    checked_parents: set[Path] = set()
    for rel, m in plan.entries:
        target = root / rel
        parent = target.parent
        if parent not in checked_parents:
            parent.mkdir(parents=True, exist_ok=True)
            # Defence in depth: the planner already refused anything that could escape.
            if not _inside(root_real, str(parent)):
                raise StageError(f"unsafe archive {archive}: member {m.name!r} would be written outside the destination; refusing to extract")
            checked_parents.add(parent)
        if m.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise StageError(f"unsafe archive {archive}: member {m.name!r} clashes with another member; refusing to extract")
            target.mkdir(exist_ok=True)
            dirs.append((target, m))
        elif m.isreg():
            src = tf.extractfile(m)
            if src is None:  # pragma: no cover - isreg() members always have data
                raise StageError(f"{archive}: cannot read member {m.name!r}")
            with src:
                _write_new_file(target, m, src)
            files.add(rel)
        elif m.islnk():
            with open(root / _norm_member_name(archive, m.linkname), "rb") as src:
                _write_new_file(target, m, src)
            files.add(rel)
        elif m.issym():
            os.symlink(m.linkname, target)
    # Directory modes last, so a read-only folder does not block its own contents.
    for path, m in reversed(dirs):
        os.chmod(path, (m.mode & 0o755) | 0o700)
        _set_mtime(path, m)


def _write_new_file(target: Path, m: tarfile.TarInfo, src) -> None:
    """Create ``target`` (never through a symlink) with ``src``'s bytes, permission bits and mtime."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            raise OSError(errno.EEXIST, "clashes with another member", str(target)) from None
        os.unlink(target)  # a later duplicate of a regular file wins, as in tar
        fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        shutil.copyfileobj(src, fh, CHUNK_BYTES)
        fh.flush()
        os.fchmod(fd, (m.mode & 0o755) | stat.S_IRUSR | stat.S_IWUSR)
        try:
            mtime = float(m.mtime)
            os.utime(fd, (mtime, mtime))
        except (OverflowError, ValueError, OSError):
            pass


def _set_mtime(path: Path, m: tarfile.TarInfo) -> None:
    try:
        mtime = float(m.mtime)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    except (OverflowError, ValueError, OSError):
        pass


__all__ = ["download", "safe_extract_tar"]
