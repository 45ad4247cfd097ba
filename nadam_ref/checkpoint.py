"""Pickle-free checkpoints of an optimizer's ``state_dict``.

The torch pattern, without pickle::

    nadam_ref.save(opt.state_dict(), "run.ckpt")
    ...
    opt.load_state_dict(nadam_ref.load("run.ckpt"))

The file is a NumPy ``.npz`` (a zip of ``.npy`` members, stored uncompressed):

* ``metadata.npy``: a 0-d string array holding JSON: the format name and
  version, the parameter groups with their options, the indices of the
  parameters that have state, and for every array its dtype, shape and the
  SHA-256 of its bytes;
* ``state.<i>.step``, ``state.<i>.mu_product``: 0-d arrays, in the dtype they
  had (float32 when the optimizer stores its scalars as torch does), so a
  resumed run continues bit for bit;
* ``state.<i>.exp_avg``, ``state.<i>.exp_avg_sq``: the moment arrays.

``np.load(path, allow_pickle=False)`` opens it, but :func:`load` reads it
itself so that it can check every header against the metadata before it
allocates anything.  Nothing is ever unpickled.

Writing is atomic: the file is written under a temporary name in the same
directory, flushed to disk (fsync), renamed over ``path`` (``os.replace``)
and the directory is fsynced, so a crash leaves either the old checkpoint or
the new one, never a mixture.  A process killed mid-save (SIGKILL, power
loss) cannot remove its temporary file, so the name says what it is and who
wrote it, ``.<name>.nadam_ref-tmp.<pid>.<random>.tmp``, and the next
successful save of the same path deletes those whose process is gone (never
one that a live process on this machine is still writing).  Reading is all-or-nothing: any truncation,
corruption or inconsistency raises :class:`CheckpointError` (a ValueError)
naming the field, and no partial state is ever returned.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from typing import Any

import numpy as np

from .optimizer import (
    STATE_KEYS,
    check_layout,
    check_param_groups,
    check_state,
    is_integer,
    to_numpy,
)

#: The format's name and version, stored in every file; a reader refuses
#: versions newer than its own.
FORMAT = "nadam_ref.checkpoint"
VERSION = 1

METADATA = "metadata"
#: dtypes a moment array (exp_avg, exp_avg_sq) may have, as stored (little-endian).
ARRAY_DTYPES = ("<f4", "<f8", "<c8", "<c16")
#: dtypes the step count and ∏μ may have.
SCALAR_DTYPES = ("<f4", "<f8", "<i4", "<i8")
#: Largest metadata member read (bytes); a bigger one is refused before it is read.
MAX_METADATA_BYTES = 64 * 2**20


class CheckpointError(ValueError):
    """A checkpoint (or a state_dict being saved) is truncated, corrupted or
    inconsistent.  The message names the file and the field."""


# -- saving ---------------------------------------------------------------------------------


def save(state_dict: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state_dict`` (an optimizer's :meth:`~nadam_ref.NAdam.state_dict`)
    to ``path`` atomically.

    The state_dict is checked as :func:`load` would check it; if it is
    invalid, CheckpointError is raised and ``path`` is not touched.
    """
    path = os.fspath(path)
    arrays, metadata = _encode(state_dict)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, metadata, arrays)
            f.flush()
            os.fsync(f.fileno())
        _set_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
    _remove_stray_temporaries(path)


#: Marks the temporary files of a save: ``.<name>.nadam_ref-tmp.<pid>.<random>.tmp``.
_TEMPORARY = "nadam_ref-tmp"


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.{_TEMPORARY}.{os.getpid()}."


def _remove_stray_temporaries(path: str) -> None:
    """Delete the temporary files that killed saves of ``path`` left behind."""
    directory = os.path.dirname(os.path.abspath(path))
    stray = re.compile(re.escape(f".{os.path.basename(path)}.{_TEMPORARY}.") + r"(\d+)\.\w+\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = stray.fullmatch(name)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:  # removed meanwhile, or not ours to remove: only tidiness is lost
                pass


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told, and
    for this process, whose other threads may be saving the same path)."""
    if os.name != "posix":
        return True  # os.kill would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def _encode(state_dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Check a state_dict and split it into arrays and JSON metadata."""
    check_layout(state_dict, "state_dict", CheckpointError)
    groups = []
    for g, group in enumerate(state_dict["param_groups"]):
        groups.append({k: _to_json(v, f"param_groups[{g}][{k!r}]") for k, v in group.items()})
    arrays, state = {}, []
    for key, entry in state_dict["state"].items():
        index = int(key)
        state.append(index)
        for name in STATE_KEYS:
            field = f"state[{index}][{name!r}]"
            try:
                value = np.asarray(to_numpy(entry[name]))
            except (TypeError, ValueError) as e:  # a ragged list, say
                raise CheckpointError(f"{field} is not an array ({e})") from None
            if name in ("step", "mu_product"):
                if (
                    value.shape != ()
                    or value.dtype.kind not in "iuf"
                    or value.dtype.newbyteorder("<").str not in SCALAR_DTYPES
                ):
                    raise CheckpointError(
                        f"{field} must be a float32, float64 or integer scalar, got {entry[name]!r}"
                    )
            arrays[f"state.{index}.{name}"] = np.array(
                value, dtype=value.dtype.newbyteorder("<"), order="C"
            )
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "param_groups": groups,
        "state": state,
        "arrays": {
            name: {
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            }
            for name, a in arrays.items()
        },
    }
    check_state(
        check_param_groups(groups, "state_dict", CheckpointError),
        _state_from_arrays(state, arrays),
        "state_dict",
        CheckpointError,
    )
    return arrays, metadata


def _to_json(value, field: str):
    """A group option as JSON: bools, numbers, strings, None, and lists of them."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"{field} is {value}; only finite numbers can be saved")
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{field}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(
        f"{field} has type {type(value).__name__}, which a checkpoint cannot store"
    )


def _write_npz(f, metadata: dict, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz, as ``np.savez`` writes it, with fixed timestamps so
    that the same state always gives the same bytes."""
    text = json.dumps(metadata, allow_nan=False, sort_keys=True)
    members = {METADATA: np.array(text), **arrays}
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in members.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, version=(1, 0), allow_pickle=False)


def _set_mode(tmp: str, path: str) -> None:
    """Give the new file the old file's permissions, or the umask's default
    (mkstemp creates it readable by its owner only)."""
    if os.name != "posix":
        return
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; Windows has no directory handles)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- loading --------------------------------------------------------------------------------


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` and return its state_dict.

    Raises CheckpointError (a ValueError) naming the file and the field if
    the file is truncated, corrupted, of another format or version, or holds
    an invalid state; OSError (e.g. FileNotFoundError) if it cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _load_bytes(data)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load_bytes(data: bytes) -> dict[str, Any]:
    # zipfile and the .npy header parser raise many kinds of error on damaged
    # input; every one of them means the same thing here.
    damaged = (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,
        NotImplementedError,
        RuntimeError,
        UnicodeDecodeError,
        MemoryError,
        RecursionError,
    )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise CheckpointError("the archive lists a member twice")
            by_name = {i.filename: i for i in infos}
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                    raise CheckpointError(
                        f"member {info.filename!r} is compressed or encrypted; checkpoints store members plainly"
                    )
            if f"{METADATA}.npy" not in by_name:
                raise CheckpointError("no metadata: not a nadam_ref checkpoint")
            metadata = _read_metadata(zf, by_name[f"{METADATA}.npy"])
            groups, state, table = _check_metadata(metadata)
            expected = {f"{METADATA}.npy"} | {f"{name}.npy" for name in table}
            if set(names) != expected:
                extra, missing = sorted(set(names) - expected), sorted(expected - set(names))
                raise CheckpointError(
                    f"the archive's members differ from the metadata (extra {extra}, missing {missing})"
                )
            arrays = {
                name: _read_array(zf, by_name[f"{name}.npy"], name, spec)
                for name, spec in table.items()
            }
    except CheckpointError:
        raise
    except damaged as e:
        raise CheckpointError(f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    state_dict = {"state": _state_from_arrays(state, arrays), "param_groups": groups}
    check_state(groups, state_dict["state"], "checkpoint", CheckpointError)
    return state_dict


def _read_npy_header(f, field: str):
    """(shape, fortran_order, dtype) of a .npy member.  NumPy's header parser
    evaluates a Python literal, and damaged text can make it raise almost
    anything (SyntaxError, tokenize.TokenError, …): all of it means "damaged"."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
    except Exception as e:
        raise CheckpointError(f"{field}: unreadable .npy header ({type(e).__name__})") from None
    raise CheckpointError(f"{field}: unsupported .npy version {version}")


def _read_metadata(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
    if info.file_size > MAX_METADATA_BYTES:
        raise CheckpointError(
            f"metadata is {info.file_size} bytes, more than the {MAX_METADATA_BYTES} allowed"
        )
    f = io.BytesIO(zf.read(info))  # read whole first, so the zip's CRC is checked before parsing
    shape, fortran, dtype = _read_npy_header(f, "metadata")
    if shape != () or dtype.kind != "U" or fortran:
        raise CheckpointError(
            f"metadata must be a 0-d string array, got shape {shape} and dtype {dtype}"
        )
    raw = f.read(dtype.itemsize)
    if len(raw) != dtype.itemsize or f.read(1):
        raise CheckpointError("metadata has the wrong length")
    text = str(np.frombuffer(raw, dtype=dtype).reshape(())[()])
    try:
        metadata = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise CheckpointError(f"metadata is not valid JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError("metadata must be a JSON object")
    return metadata


def _reject_constant(name: str):
    raise CheckpointError(f"metadata holds the non-JSON number {name}")


def _check_metadata(metadata: dict) -> tuple[list, list[int], dict[str, tuple]]:
    """The metadata's groups, state indices and array table, with their types checked."""
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}"
        )
    version = metadata.get("version")
    if not is_integer(version) or version < 1:
        raise CheckpointError(f"metadata 'version' must be a positive integer, got {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"written in format version {version}; this nadam_ref reads up to version {VERSION}"
        )
    missing = [k for k in ("param_groups", "state", "arrays") if k not in metadata]
    if missing:
        raise CheckpointError(f"metadata lacks {missing}")
    groups = check_param_groups(metadata["param_groups"], "metadata", CheckpointError)
    state = metadata["state"]
    if (
        not isinstance(state, list)
        or not all(is_integer(i) and i >= 0 for i in state)
        or len(set(state)) != len(state)
    ):
        raise CheckpointError("metadata 'state' must be a list of distinct parameter indices")
    table = metadata["arrays"]
    if not isinstance(table, dict):
        raise CheckpointError("metadata 'arrays' must be an object")
    expected = {f"state.{i}.{k}" for i in state for k in STATE_KEYS}
    if set(table) != expected:
        raise CheckpointError(
            f"metadata 'arrays' lists {sorted(set(table) - expected)} too many "
            f"and {sorted(expected - set(table))} too few"
        )
    specs = {}
    for name, spec in table.items():
        field = f"metadata 'arrays'[{name!r}]"
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "sha256"}:
            raise CheckpointError(f"{field} must have exactly the keys dtype, shape, sha256")
        scalar = name.endswith((".step", ".mu_product"))
        if spec["dtype"] not in (SCALAR_DTYPES if scalar else ARRAY_DTYPES):
            raise CheckpointError(f"{field} has dtype {spec['dtype']!r}")
        shape = spec["shape"]
        if (
            not isinstance(shape, list)
            or not all(is_integer(n) and n >= 0 for n in shape)
            or (scalar and shape)
        ):
            raise CheckpointError(f"{field} has shape {shape!r}")
        digest = spec["sha256"]
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise CheckpointError(f"{field} has no valid sha256")
        specs[name] = (np.dtype(spec["dtype"]), tuple(shape), digest)
    return groups, state, specs


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, spec: tuple) -> np.ndarray:
    dtype, shape, digest = spec
    nbytes = dtype.itemsize * math.prod(shape)
    # The declared size must fit before anything is allocated for the array.
    if info.file_size > nbytes + 65536:
        raise CheckpointError(
            f"{name}: member is {info.file_size} bytes, too large for {shape} of {dtype}"
        )
    f = io.BytesIO(zf.read(info))
    header = _read_npy_header(f, name)
    if header != (shape, False, dtype):
        raise CheckpointError(
            f"{name}: stored as shape {header[0]} and dtype {header[2]}, metadata says {shape} and {dtype}"
        )
    raw = f.read(nbytes)
    if len(raw) != nbytes or f.read(1):
        raise CheckpointError(f"{name}: holds the wrong number of bytes")
    if hashlib.sha256(raw).hexdigest() != digest:
        raise CheckpointError(f"{name}: contents do not match their sha256")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


# -- reading the arrays back ----------------------------------------------------------------


def _state_from_arrays(state: list[int], arrays: dict[str, np.ndarray]) -> dict[int, dict]:
    out = {}
    for i in state:
        entry = {k: arrays[f"state.{i}.{k}"] for k in STATE_KEYS}
        entry["step"] = entry["step"].reshape(()).dtype.type(entry["step"].reshape(())[()])
        entry["mu_product"] = (
            entry["mu_product"].reshape(()).dtype.type(entry["mu_product"].reshape(())[()])
        )
        out[int(i)] = entry
    return out
