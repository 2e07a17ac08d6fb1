"""Safe unpacking of archives from strangers: zip and tar (plain, gzip, bzip2, xz).

A catalog archive is untrusted input. Before a byte is written, every member is checked:

* its name stays inside the extraction folder (no absolute path, drive letter or ``..``);
* it is a regular file or a folder, or, in a tar, a link whose target stays inside the
  archive; devices, FIFOs and zip symbolic links are refused;
* the sizes its directory declares stay within :data:`MAX_EXPANDED_BYTES` in all and
  ``MAX_RATIO`` times the compressed size (a zip's per member, a tar's for the whole
  stream, which is compressed as one).

Tar members are then written through :mod:`tarfile`'s ``data`` filter as a second line of
defence. Every refusal is a :class:`~idigdask.errors.UserError` of one line.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile

from ..errors import UserError

#: Limits on what an archive may expand to, checked from its directory before a byte is
#: extracted: text compresses about 10-fold, a zip bomb a thousandfold.
MAX_EXPANDED_BYTES = 8 * 2**30
MAX_RATIO = 200
#: Expansions below this size are never refused for their ratio (tiny files compress well).
SMALL_BYTES = 2**20

_DRIVE = re.compile(r"^[A-Za-z]:")


def _redact(text: object) -> str:
    from ..fetch import redact  # fetch imports aiohttp lazily, but keep catalog imports light

    return redact(text)


def unsafe_name(name: str) -> str | None:
    """Why a member name or data file location would leave its folder, else None.

    Both separators count: an archive made on Windows may use backslashes.
    """
    if not name or "\x00" in name:
        return "an empty or NUL-containing name"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "a path that climbs out with '..'"
    return None


def _refuse(source: str, member: str, why: str) -> UserError:
    return UserError(f"{_redact(source)}: refused the archive member {member!r} ({why})")


def _check_total(source: str, total: int) -> None:
    """Refuse an expansion over the absolute limit."""
    if total > MAX_EXPANDED_BYTES:
        raise UserError(f"{_redact(source)}: the archive would expand to {total} bytes, over "
                        f"the limit of {MAX_EXPANDED_BYTES}")


def _check_ratio(source: str, size: int, compressed: int, what: str) -> None:
    """Refuse ``what`` when it expands past :data:`MAX_RATIO` times its compressed size."""
    if size > SMALL_BYTES and size > MAX_RATIO * max(compressed, 1):
        raise UserError(f"{_redact(source)}: {what} would expand "
                        f"{size // max(compressed, 1)}-fold to {size} bytes; refused as a "
                        "decompression bomb")


def check_expansion(local: str, source: str) -> None:
    """Refuse a zip whose members would expand without bound (a zip bomb).

    Python's zipfile never writes more than a member's declared size, so the sizes in
    the central directory bound what extracting the archive can write. Anything that is
    not a zip passes: :func:`unpack` checks tars as it reads their headers.
    """
    if not zipfile.is_zipfile(local):
        return
    with zipfile.ZipFile(local) as archive:
        _check_zip_sizes(archive.infolist(), source)


def _check_zip_sizes(members: list[zipfile.ZipInfo], source: str) -> None:
    _check_total(source, sum(m.file_size for m in members))
    for m in members:
        _check_ratio(source, m.file_size, m.compress_size, m.filename)


def _zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    why = unsafe_name(info.filename)
    if why:
        return why
    if info.flag_bits & 0x1:
        return "encrypted"
    # Unix makers keep st_mode in the high bits; many writers leave the file type out (0).
    kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "a device or other special file"
    return None


def _unpack_zip(local: str, dest: str, source: str) -> None:
    with zipfile.ZipFile(local) as archive:
        members = archive.infolist()
        for info in members:
            why = _zip_member_problem(info)
            if why:
                raise _refuse(source, info.filename, why)
        _check_zip_sizes(members, source)
        archive.extractall(dest)


def _tar_member_problem(member: tarfile.TarInfo) -> str | None:
    why = unsafe_name(member.name)
    if why:
        return why
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
        if os.path.isabs(member.linkname) or target.split(os.sep)[0] == "..":
            return f"a symbolic link to {member.linkname!r}, outside the archive"
        return None
    if member.islnk():
        why = unsafe_name(member.linkname)
        return f"a hard link to {member.linkname!r}, outside the archive" if why else None
    return "a device or other special file"


def _unpack_tar(local: str, dest: str, source: str) -> None:
    compressed = os.path.getsize(local)
    total = 0
    with tarfile.open(local, "r:*") as archive:
        members = []
        # Iterating reads the headers one by one: a bomb is refused at its first header,
        # before its data is decompressed, let alone written.
        for member in archive:
            why = _tar_member_problem(member)
            if why:
                raise _refuse(source, member.name, why)
            total += member.size
            _check_total(source, total)
            _check_ratio(source, total, compressed, "the archive")
            members.append(member)
        try:
            archive.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise _refuse(source, exc.tarinfo.name, str(exc)) from None


def unpack(local: str, dest: str, source: str) -> str:
    """Unpack a zip or tar archive into ``dest`` after checking every member.

    Parameters
    ----------
    local : str
        Path of the archive file on this machine.
    dest : str
        An empty folder to unpack into.
    source : str
        The archive's name for messages (redacted there).

    Returns
    -------
    str
        The folder holding the archive's content: ``dest``, or its only sub-folder when the
        archive wraps everything in one folder (a common way of zipping a folder).

    Raises
    ------
    UserError
        When the archive is neither a zip nor a tar, or a member is unsafe or too large.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> archive = os.path.join(folder, "dwca.zip")
    >>> with zipfile.ZipFile(archive, "w") as z:
    ...     z.writestr("dwca/meta.xml", "<archive/>")
    ...     z.writestr("dwca/multimedia.txt", "identifier\\n")
    >>> root = unpack(archive, os.path.join(folder, "out"), "dwca.zip")
    >>> os.path.relpath(root, folder), sorted(os.listdir(root))
    ('out/dwca', ['meta.xml', 'multimedia.txt'])
    >>> with zipfile.ZipFile(archive, "w") as z:
    ...     z.writestr("../meta.xml", "<archive/>")
    >>> unpack(archive, os.path.join(folder, "out2"), "dwca.zip")
    Traceback (most recent call last):
    ...
    idigdask.errors.UserError: dwca.zip: refused the archive member '../meta.xml' (a path that climbs out with '..')
    >>> import shutil; shutil.rmtree(folder)
    """
    if zipfile.is_zipfile(local):
        _unpack_zip(local, dest, source)
    elif tarfile.is_tarfile(local):
        _unpack_tar(local, dest, source)
    else:
        raise UserError(f"{_redact(source)}: not a readable Darwin Core Archive (neither a zip "
                        "nor a tar file)")
    return content_root(dest)


def content_root(folder: str) -> str:
    """``folder``, or its only entry when that entry is a folder holding the archive."""
    entries = os.listdir(folder)
    if len(entries) == 1:
        inner = os.path.join(folder, entries[0])
        if os.path.isdir(inner) and not os.path.islink(inner):
            return inner
    return folder
