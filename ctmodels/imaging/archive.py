"""Zip and tar archives and folders -> in-memory (name, bytes) members that may be images.

Why: a DICOM series arrives as a zip (browser upload) or a folder (local path). Archives are
attacker-shaped input, so nothing is ever extracted to disk, and we refuse, before reading:
zip-slip names (absolute, '..'), symlink members, nested archives, too many members, a declared
total size over the limit and per-member compression ratios only a zip bomb has. While reading,
the actual decompressed size may never exceed the declared one (read in chunks).
A tar (plain or .tar.gz, as Linux tools and some PACS exports write a series) gets the same rules: links,
devices and escaping names are refused, the members' declared sizes bound what is read.
Folders get the same treatment: symlinks pointing outside the folder are refused.
A caller may also ``probe`` the members' first bytes before any is read whole (a DICOM series is counted
from its headers, so a refusal costs a few KB per member, not the series).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import tarfile
import zipfile
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Sequence

from .errors import (
    CorruptImageError,
    EmptyArchiveError,
    ImageTooLargeError,
    UnsafeArchiveError,
    UnsupportedEncodingError,
)
from .limits import (
    COMPRESSION_RATIO_MIN_BYTES,
    MAX_ARCHIVE_MEMBERS,
    MAX_ARCHIVE_UNCOMPRESSED_BYTES,
    MAX_COMPRESSION_RATIO,
    MAX_INPUT_BYTES,
    READ_CHUNK_BYTES,
)

logger = logging.getLogger(__name__)

Member = tuple[str, bytes]
#: The first ``n`` bytes of a member, or None when they cannot be read (reading it whole then says why).
PrefixReader = Callable[[int], "bytes | None"]
Probe = Callable[[Sequence[tuple[str, PrefixReader]]], None]

EMPTY_MESSAGE = "The zip contains no DICOM, NIfTI or image files."
NESTED_MESSAGE = (
    "The zip contains another archive ({}); unzip the inner archive first and upload its contents."
)

_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "dicomdir.bak"}
_HELPER_EXTENSIONS = {
    ".txt", ".csv", ".tsv", ".json", ".xml", ".pdf", ".html", ".htm", ".md", ".rtf", ".doc", ".docx",
    ".xls", ".xlsx", ".ini", ".log", ".exe", ".dll", ".js", ".css", ".py", ".ipynb", ".yaml", ".yml",
    ".sh", ".bat", ".inf", ".url", ".lnk",
}
_ARCHIVE_EXTENSIONS = (".zip", ".7z", ".rar", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def is_zip(data: bytes) -> bool:
    """Local-file header, empty-archive end record or spanned marker."""
    return data[:4] in _ZIP_MAGICS


def is_tar(data: bytes) -> bool:
    """A POSIX/GNU tar, plain or gzip-compressed (its first header's 'ustar' magic, after inflating 512 bytes)."""
    head = data[:512]
    if head[:2] == b"\x1f\x8b":
        import zlib

        try:
            head = zlib.decompressobj(31).decompress(data[:65536], 512)
        except zlib.error:
            return False
    return len(head) >= 262 and head[257:262] == b"ustar"


def read_tar(data: bytes, keep_all: bool = False, probe: Probe | None = None) -> list[Member]:
    """Candidate image members of a tar or .tar.gz, read safely into memory, with the zip rules (``read_zip``)."""
    try:
        tf = tarfile.open(fileobj=BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptImageError("The tar archive is damaged or incomplete and cannot be opened.") from exc
    with tf:
        try:
            infos = _select_tar_members(tf, keep_all, packed=len(data))
            if probe is not None:
                probe([(info.name, _tar_prefix(tf, info)) for info in infos])
            members = [(info.name.replace("\\", "/"), _read_tar_member(tf, info)) for info in infos]
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptImageError("The tar archive is damaged: one of its files cannot be unpacked.") from exc
    for _, member in members:
        if is_zip(member) or is_tar(member):
            raise UnsafeArchiveError(NESTED_MESSAGE.format("an archive").replace("The zip", "The tar archive"))
    if not members:
        raise EmptyArchiveError(EMPTY_MESSAGE.replace("zip", "tar archive"))
    return members


def _select_tar_members(tf: tarfile.TarFile, keep_all: bool, packed: int) -> list[tarfile.TarInfo]:
    """The tar's headers, walked once (the stream is read through, not its data kept): the zip rules."""
    selected: list[tarfile.TarInfo] = []
    total = count = 0
    for info in tf:
        count += 1
        if count > MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchiveError(f"The tar archive holds more than {MAX_ARCHIVE_MEMBERS} entries.")
        name = _check_name(info.name, "tar archive")
        if info.issym() or info.islnk():
            raise UnsafeArchiveError("The tar archive contains a link; links are not accepted in uploads.")
        if not info.isfile() or (_is_junk(name) and not (keep_all and not _is_os_junk(name))):
            continue  # folders, devices, fifos: never read
        nested = _nested_archive(name)
        if nested:
            raise UnsafeArchiveError(NESTED_MESSAGE.format(f"a {nested} file").replace("The zip", "The tar archive"))
        total += info.size
        if total > MAX_ARCHIVE_UNCOMPRESSED_BYTES:
            raise UnsafeArchiveError(
                f"The tar archive would unpack to more than {MAX_ARCHIVE_UNCOMPRESSED_BYTES / 1024**3:.0f} GB."
            )
        if total > COMPRESSION_RATIO_MIN_BYTES and total > MAX_COMPRESSION_RATIO * max(packed, 1):
            raise UnsafeArchiveError(
                f"The tar archive's files expand to over {MAX_COMPRESSION_RATIO} times its size (an archive "
                "'bomb'); real scans compress a few times. It is not safe to open."
            )
        selected.append(info)
    return selected


def _tar_prefix(tf: tarfile.TarFile, info: tarfile.TarInfo) -> PrefixReader:
    def read(n: int) -> bytes | None:
        try:
            fh = tf.extractfile(info)
            return fh.read(min(n, info.size)) if fh is not None else None
        except Exception:  # the whole read reports it
            return None
    return read


def _read_tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    fh = tf.extractfile(info)
    if fh is None:
        raise CorruptImageError("The tar archive is damaged: one of its files cannot be unpacked.")
    try:
        return fh.read(info.size)
    except MemoryError as exc:
        raise ImageTooLargeError("The tar archive is too large to unpack in memory.") from exc


def natural_key(name: str) -> list:
    """'slice2' before 'slice10': numbers compare as numbers (used to order members by name)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower())]


def _is_junk(name: str) -> bool:
    """Directories of OS metadata and helper documents that are never images."""
    parts = PurePosixPath(name).parts
    if any(p.lower() == "__macosx" for p in parts):
        return True
    base = parts[-1] if parts else name
    if base.lower() in _JUNK_NAMES or base.startswith("._"):
        return True
    return PurePosixPath(base.lower()).suffix in _HELPER_EXTENSIONS


def _is_os_junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    base = parts[-1] if parts else name
    return any(p.lower() == "__macosx" for p in parts) or base.lower() in _JUNK_NAMES or base.startswith("._")


def _nested_archive(name: str) -> str | None:
    lower = name.lower()
    for ext in _ARCHIVE_EXTENSIONS:
        if lower.endswith(ext):
            return ext
    return None


def _check_name(raw: str, container: str = "zip") -> str:
    """Refuse names that would escape a folder if someone did extract the archive."""
    name = raw.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"The {container} contains a file with an absolute path; it is not safe to open.")
    if ".." in name.split("/"):
        raise UnsafeArchiveError(
            f"The {container} contains a file path with '..' that points outside the archive; it is not safe to open."
        )
    return name


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def read_zip(source: bytes | str | os.PathLike | BinaryIO, keep_all: bool = False,
             probe: Probe | None = None) -> list[Member]:
    """Candidate image members of a zip, read safely into memory (never extracted to disk).

    ``keep_all`` also keeps helper files (CSV labels, JSON manifests): used when a whole dataset is
    uploaded for training. The safety checks are the same either way. ``probe`` sees every member's
    prefix reader first and may refuse the upload before anything is read whole.
    """
    try:
        zf = zipfile.ZipFile(BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise CorruptImageError("The zip file is damaged or incomplete and cannot be opened.") from exc
    with zf:
        infos = _select_members(zf.infolist(), keep_all)
        names = [info.filename.replace("\\", "/") for info in infos]
        if probe is not None:
            probe([(name, _zip_prefix(zf, info)) for name, info in zip(names, infos)])
        members = [(name, _read_member(zf, info)) for name, info in zip(names, infos)]
    for name, data in members:
        if is_zip(data):
            raise UnsafeArchiveError(NESTED_MESSAGE.format("a zip file"))
    if not members:
        raise EmptyArchiveError(EMPTY_MESSAGE)
    logger.debug("Zip: %d candidate members", len(members))
    return members


def _select_members(infos: list[zipfile.ZipInfo], keep_all: bool = False) -> list[zipfile.ZipInfo]:
    """Safety checks on the central directory, then the members worth reading."""
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise UnsafeArchiveError(
            f"The zip holds {len(infos)} entries; at most {MAX_ARCHIVE_MEMBERS} are accepted."
        )
    selected = []
    for info in infos:
        name = _check_name(info.filename)
        if _is_symlink(info):
            raise UnsafeArchiveError("The zip contains a symbolic link; links are not accepted in uploads.")
        if info.is_dir() or (_is_junk(name) and not (keep_all and not _is_os_junk(name))):
            continue
        nested = _nested_archive(name)
        if nested:
            raise UnsafeArchiveError(NESTED_MESSAGE.format(f"a {nested} file"))
        if info.flag_bits & 0x1:
            raise UnsupportedEncodingError("The zip is password-protected; upload an unencrypted zip.")
        _check_ratio(info)
        selected.append(info)
    total = sum(info.file_size for info in selected)
    packed = sum(max(info.compress_size, 0) for info in selected)
    if total > COMPRESSION_RATIO_MIN_BYTES and total > MAX_COMPRESSION_RATIO * max(packed, 1):
        raise UnsafeArchiveError(  # many small members, each under the per-file rule, add up to a bomb too
            f"The zip's files expand to {total / max(packed, 1):.0f} times their compressed size (a 'zip bomb'); "
            "real scans compress a few times. It is not safe to open."
        )
    if total > MAX_ARCHIVE_UNCOMPRESSED_BYTES:
        raise UnsafeArchiveError(
            f"The zip would unpack to {total / 1024**3:.1f} GB; at most "
            f"{MAX_ARCHIVE_UNCOMPRESSED_BYTES / 1024**3:.0f} GB is accepted."
        )
    return selected


def _check_ratio(info: zipfile.ZipInfo) -> None:
    """Real images compress a few times; a ratio of hundreds is a zip bomb."""
    if info.file_size <= COMPRESSION_RATIO_MIN_BYTES:
        return
    if info.compress_size <= 0 or info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        raise UnsafeArchiveError(
            "A file in the zip expands to hundreds of times its compressed size (a 'zip bomb'); "
            "it is not safe to open."
        )


def _zip_prefix(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> PrefixReader:
    def read(n: int) -> bytes | None:
        try:
            with zf.open(info) as fh:
                return fh.read(min(n, info.file_size))
        except Exception:  # damaged, encrypted, unknown method: the whole read reports it
            return None
    return read


def _file_prefix(path: Path) -> PrefixReader:
    def read(n: int) -> bytes | None:
        try:
            with path.open("rb") as fh:
                return fh.read(n)
        except OSError:
            return None
    return read


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Read in chunks; stop as soon as more comes out than the directory declared."""
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                out += chunk
                if len(out) > info.file_size:
                    raise UnsafeArchiveError(
                        "A file in the zip unpacks to more data than the zip declares; "
                        "it is not safe to open."
                    )
    except UnsafeArchiveError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The zip is too large to unpack in memory.") from exc
    except NotImplementedError as exc:
        raise UnsupportedEncodingError(
            "The zip uses a compression method this app cannot unpack; "
            "re-create it with standard (deflate) compression."
        ) from exc
    except Exception as exc:  # BadZipFile (CRC), EOFError, zlib/lzma/bz2 errors
        raise CorruptImageError("The zip file is damaged: one of its files cannot be unpacked.") from exc
    return bytes(out)


def read_folder(path: str | os.PathLike, probe: Probe | None = None) -> list[Member]:
    """Candidate image files under a folder (recursively), with the zip rules applied (and ``probe``)."""
    root = Path(path).resolve()
    files: list[tuple[str, Path]] = []
    total = 0
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                _check_link_inside(here / d, root)
                dirnames.remove(d)  # inside the folder: its files are reached directly
        dirnames.sort(key=str.lower)
        for fn in sorted(filenames, key=str.lower):
            p = here / fn
            rel = p.relative_to(root).as_posix()
            if _is_junk(rel):
                continue
            if p.is_symlink():
                _check_link_inside(p, root)
                continue  # its target inside the folder is read as itself: a link would repeat a slice
            nested = _nested_archive(rel)
            if nested:
                raise UnsafeArchiveError(
                    f"The folder contains an archive ({nested}); unzip it first and upload its contents."
                )
            st = p.stat()
            if not stat.S_ISREG(st.st_mode):
                continue  # fifos, sockets, devices: never read
            count += 1
            total += st.st_size
            if count > MAX_ARCHIVE_MEMBERS:
                raise ImageTooLargeError(f"The folder holds more than {MAX_ARCHIVE_MEMBERS} files.")
            if total > MAX_INPUT_BYTES:
                raise ImageTooLargeError(
                    f"The folder holds more than {MAX_INPUT_BYTES / 1024**3:.0f} GB of files."
                )
            files.append((rel, p))
    if not files:
        raise EmptyArchiveError("The folder contains no DICOM, NIfTI or image files.")
    if probe is not None:
        probe([(rel, _file_prefix(p)) for rel, p in files])
    members = [(rel, p.read_bytes()) for rel, p in files]
    logger.debug("Folder: %d candidate files", len(members))
    return members


def _check_link_inside(link: Path, root: Path) -> None:
    try:
        target = link.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # Python < 3.13 reports a loop as RuntimeError, later as ELOOP
        loop = isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP
        what = "a link that points to itself" if loop else "a link to something that does not exist"
        raise UnsafeArchiveError(f"The folder holds {what} ({link.name}); remove it.") from exc
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(
            "The folder contains a link to a location outside it; links must stay inside."
        )
