"""A bounded fuzz run of every file loader nadam_ref has.

    python tests/fuzz_loaders.py --seconds 60 [--seed 0] [--save-crashes DIR]

Targets and the one error each may raise on bad input:

* ``checkpoint``:  :func:`nadam_ref.load` (an ``.npz`` checkpoint) → CheckpointError;
* ``golden-json``: :func:`nadam_ref.golden.format.loads` on a JSON case → GoldenFormatError;
* ``golden-npz``:  the same on an ``.npz`` case → GoldenFormatError;
* ``verifier-output.npy|.npz|.csv``: :func:`nadam_ref.golden.verifier.read_actual`,
  an implementation's output handed to the verifier → GoldenFormatError.

Inputs are valid files mutated by Hypothesis (run in batches, generation
only, until the time is up): bit and byte flips, cuts, truncations,
insertions, duplicated and swapped spans, splices of two files, and
structured edits that replace or delete any entry of the JSON metadata and
rebuild a well-formed file around it.  A *crash* is any other exception, or
a byte-mutated checkpoint that loads with a state none of the seed files
holds (the checksums must catch every change).  The exit status is 1 if
there was a crash, and each crashing input can be saved for replay.

Pure Hypothesis, no extra dependency (atheris is not needed).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import nadam_ref
from nadam_ref import NAdam, Parameter
from nadam_ref.checkpoint import CheckpointError

GOLDEN_SEEDS = ("zero-gradients.json", "shape-scalar.json", "param-groups.json")


# -- seed files ---------------------------------------------------------------------------


def checkpoint_seeds() -> list[bytes]:
    """Checkpoints of three small optimizers: float32 scalars with a complex
    parameter and an unstepped one; float64; and one never stepped at all."""
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as d:
        for kind in range(3):
            if kind == 0:
                ps = [
                    Parameter(rng.standard_normal((2, 3)).astype(np.float32)),
                    Parameter(rng.standard_normal(3).astype(np.complex64)),
                    Parameter(np.zeros(2, np.float32)),
                ]
                opt = NAdam(
                    [{"params": ps[:2]}, {"params": ps[2:], "lr": 1e-2, "maximize": True}],
                    scalar_dtype=np.float32,
                    backend="numpy",
                )
                live = ps[:2]
            else:
                ps = [Parameter(rng.standard_normal(4)), Parameter(rng.standard_normal(()))]
                opt = NAdam(ps, weight_decay=0.1, decoupled_weight_decay=True, backend="numpy")
                live = ps if kind == 1 else []
            for _ in range(2):
                for p in live:
                    p.grad = rng.standard_normal(p.shape).astype(p.dtype)
                if live:
                    opt.step()
            path = os.path.join(d, f"{kind}.ckpt")
            nadam_ref.save(opt.state_dict(), path)
            out.append(Path(path).read_bytes())
    return out


def golden_seeds() -> tuple[list[bytes], list[bytes]]:
    """A few small golden cases as JSON, and the same cases as .npz."""
    try:
        from importlib import resources

        from nadam_ref.golden import format as golden_format
    except ImportError:
        return [], []
    suite = resources.files("nadam_ref.golden").joinpath("suite")
    jsons = [
        suite.joinpath(name).read_bytes() for name in GOLDEN_SEEDS if suite.joinpath(name).is_file()
    ]
    npzs = [golden_format.to_npz(golden_format.loads(data)) for data in jsons]
    return jsons, npzs


# -- structured edits ---------------------------------------------------------------------


def zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _json_paths(node, at=()):
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return
    for k, v in items[:50]:  # long number arrays: their first entries are enough
        yield at + (k,)
        yield from _json_paths(v, at + (k,))


json_junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
        st.sampled_from(["nan", "inf", "-inf", "float32", "complex64", "<f4", "|O"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _edit_json(data: st.DataObject, doc):
    doc = copy.deepcopy(doc)
    paths = list(_json_paths(doc))
    if not paths:
        return data.draw(json_junk, label="whole document")
    where = data.draw(st.sampled_from(paths), label="where")
    target = doc
    for k in where[:-1]:
        target = target[k]
    if isinstance(target, dict) and data.draw(st.booleans(), label="delete"):
        del target[where[-1]]
    else:
        target[where[-1]] = data.draw(json_junk, label="junk")
    return doc


def structured_checkpoint(data: st.DataObject, raw: bytes) -> bytes:
    """Edit the metadata JSON (or swap in a junk array member) and rebuild a
    well-formed zip, so the damage is in the content, not the CRCs."""
    members = zip_members(raw)
    if data.draw(st.booleans(), label="edit metadata"):
        meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]), allow_pickle=False)))
        members["metadata.npy"] = _npy(np.array(json.dumps(_edit_json(data, meta))))
    else:
        name = data.draw(st.sampled_from(sorted(members)), label="member")
        members[name] = _npy(
            data.draw(
                st.sampled_from(
                    [
                        np.zeros(3),
                        np.float32(-1),
                        np.float64(np.nan),
                        np.array("text"),
                        np.zeros((2, 3), np.float32),
                        np.ones(3, np.complex128),
                        np.arange(4, dtype=np.int64),
                        np.zeros(0),
                        np.float32(2.0),
                    ]
                ),
                label="array",
            )
        )
    return rezip(members)


def structured_golden_json(data: st.DataObject, raw: bytes) -> bytes:
    return json.dumps(_edit_json(data, json.loads(raw))).encode()


def structured_golden_npz(data: st.DataObject, raw: bytes) -> bytes:
    members = zip_members(raw)
    if data.draw(st.booleans(), label="edit meta"):
        meta = json.loads(np.load(io.BytesIO(members["meta.npy"]), allow_pickle=False).tobytes())
        members["meta.npy"] = _npy(
            np.frombuffer(json.dumps(_edit_json(data, meta)).encode(), np.uint8)
        )
    else:
        name = data.draw(st.sampled_from(sorted(members)), label="member")
        members[name] = _npy(
            data.draw(
                st.sampled_from(
                    [
                        np.zeros(3),
                        np.array("text"),
                        np.zeros((2, 3), np.float32),
                        np.ones(3, np.complex128),
                        np.zeros(0),
                        np.zeros(10**6, np.uint8),
                    ]
                ),
                label="array",
            )
        )
    return rezip(members)


# -- byte edits ---------------------------------------------------------------------------


def mutate_bytes(data: st.DataObject, raw: bytes, others: list[bytes]) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        kind = data.draw(
            st.sampled_from(
                [
                    "bit",
                    "byte",
                    "interesting",
                    "cut",
                    "truncate",
                    "insert",
                    "duplicate",
                    "swap",
                    "splice",
                ]
            ),
            label="kind",
        )
        n = len(out)
        i = data.draw(st.integers(0, max(n - 1, 0)), label="at")
        if kind == "bit" and n:
            out[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "byte" and n:
            out[i] = data.draw(st.integers(0, 255), label="value")
        elif kind == "interesting" and n:
            value = data.draw(
                st.sampled_from(
                    [
                        b"\x00",
                        b"\xff",
                        b"\x7f",
                        b"\x80",
                        b"\x00\x00\x00\x00",
                        b"\xff\xff\xff\xff",
                        b"9",
                        b'"',
                        b"{",
                        b"]",
                    ]
                ),
                label="value",
            )
            out[i : i + len(value)] = value
        elif kind == "cut":
            del out[i : i + data.draw(st.integers(1, 256), label="length")]
        elif kind == "truncate":
            del out[i:]
        elif kind == "insert":
            out[i:i] = data.draw(st.binary(min_size=1, max_size=32), label="bytes")
        elif kind == "duplicate" and n:
            j = data.draw(st.integers(i, min(n, i + 512)), label="to")
            out[j:j] = out[i:j]
        elif kind == "swap" and n:
            j = data.draw(st.integers(0, n - 1), label="with")
            out[i], out[j] = out[j], out[i]
        elif kind == "splice" and others:
            other = data.draw(st.sampled_from(others), label="other")
            k = data.draw(st.integers(0, len(other)), label="from")
            out = out[:i] + bytearray(other[k:])
    return bytes(out)


# -- the run ------------------------------------------------------------------------------


def _state_bits(sd) -> tuple:
    return (
        sorted(
            (
                k,
                tuple(
                    (n, np.asarray(v).dtype.str, np.asarray(v).shape, np.asarray(v).tobytes())
                    for n, v in sorted(s.items())
                ),
            )
            for k, s in sd["state"].items()
        ),
        json.dumps(sd["param_groups"], sort_keys=True, default=str),
    )


def actual_seeds() -> tuple[object, dict[str, list[bytes]]]:
    """A golden case and an implementation's output for it, as the verifier
    reads it: an .npy (one parameter), an .npz (all) and a .csv."""
    try:
        from importlib import resources

        from nadam_ref.golden import format as golden_format
    except ImportError:
        return None, {}
    suite = resources.files("nadam_ref.golden").joinpath("suite")
    case = golden_format.loads(suite.joinpath("param-groups.json").read_bytes())
    params = case.expected["param"]
    npy = _npy(np.ascontiguousarray(params[0]))
    buf = io.BytesIO()
    np.savez(buf, **{f"p{i}": a for i, a in enumerate(params)})
    rows = np.concatenate([a.reshape(a.shape[0], -1) for a in params], axis=1)
    csv = ("\n".join(",".join(repr(float(x)) for x in row) for row in rows) + "\n").encode()
    return case, {".npy": [npy], ".npz": [buf.getvalue()], ".csv": [csv]}


def fuzz(
    seconds: float, seed: int = 0, save_crashes: str | None = None, targets: list[str] | None = None
) -> dict:
    """Fuzz the loaders (all, or those named in ``targets``, prefixes
    allowed) for ``seconds``; return counts and the crashes found."""
    chosen = targets
    ckpts = checkpoint_seeds()
    expected = {raw: _state_bits(_load_raw(raw)) for raw in ckpts}
    workdir = tempfile.mkdtemp(prefix="fuzz-loaders-")
    ckpt_path = os.path.join(workdir, "fuzz.ckpt")

    def load_checkpoint(blob: bytes, structured: bool) -> None:
        Path(ckpt_path).write_bytes(blob)
        loaded = nadam_ref.load(ckpt_path)
        # a splice may carry a whole other seed file (zip tolerates a prefix),
        # so a state that loads must be one of those saved
        if not structured and _state_bits(loaded) not in expected.values():
            raise AssertionError("a byte-mutated checkpoint loaded with a state never saved")

    # target: (seed files, loader(blob, structured), its documented error, structured mutator or None)
    targets = {"checkpoint": (ckpts, load_checkpoint, CheckpointError, structured_checkpoint)}
    gjson, gnpz = golden_seeds()
    if gjson:
        from nadam_ref.golden.format import GoldenFormatError, loads
        from nadam_ref.golden.verifier import read_actual

        def load_golden(blob: bytes, structured: bool) -> None:
            loads(blob, source="fuzz")

        targets["golden-json"] = (gjson, load_golden, GoldenFormatError, structured_golden_json)
        targets["golden-npz"] = (gnpz, load_golden, GoldenFormatError, structured_golden_npz)
        case, outputs = actual_seeds()
        for suffix, files in outputs.items():

            def load_actual(blob: bytes, structured: bool, suffix=suffix) -> None:
                path = os.path.join(workdir, f"actual{suffix}")
                Path(path).write_bytes(blob)
                read_actual(path, case)

            targets[f"verifier-output{suffix}"] = (files, load_actual, GoldenFormatError, None)
    if chosen:
        targets = {k: v for k, v in targets.items() if any(k.startswith(c) for c in chosen)}
        if not targets:
            raise ValueError(f"no fuzz target matches {chosen}")
    report = {
        "runs": 0,
        "seconds": seconds,
        "by_target": Counter(),
        "outcomes": Counter(),
        "crashes": [],
    }
    deadline = time.monotonic() + seconds

    def run_one(data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(targets)), label="target")
        seeds, loader, documented, restructure = targets[target]
        raw = data.draw(st.sampled_from(seeds), label="seed file")
        structured = restructure is not None and data.draw(st.integers(0, 3), label="mode") == 0
        if structured:
            blob = restructure(data, raw)
        else:
            blob = mutate_bytes(data, raw, [s for s in seeds if s is not raw])
        report["runs"] += 1
        report["by_target"][target] += 1
        try:
            loader(blob, structured)
            report["outcomes"][f"{target}: loaded"] += 1
        except documented:
            report["outcomes"][f"{target}: documented error"] += 1
        except Exception:
            digest = hashlib.sha256(blob).hexdigest()[:16]
            report["crashes"].append(
                {"target": target, "input": digest, "traceback": traceback.format_exc()}
            )
            if save_crashes:
                os.makedirs(save_crashes, exist_ok=True)
                Path(save_crashes, f"{target}-{digest}.bin").write_bytes(blob)

    batch = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # overflow casting junk numbers is expected
            while time.monotonic() < deadline:
                test = settings(
                    max_examples=25,
                    database=None,
                    deadline=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )(given(st.data())(run_one))
                hypothesis_seed(seed * 1_000_003 + batch)(test)()
                batch += 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _load_raw(raw: bytes) -> dict:
    fd, path = tempfile.mkstemp(suffix=".ckpt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        return nadam_ref.load(path)
    finally:
        os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed of the first batch")
    parser.add_argument("--save-crashes", metavar="DIR", help="write each crashing input to DIR")
    parser.add_argument(
        "--targets",
        nargs="+",
        metavar="NAME",
        help="fuzz only these targets (prefixes: checkpoint, golden, verifier-output)",
    )
    args = parser.parse_args(argv)
    report = fuzz(args.seconds, args.seed, args.save_crashes, args.targets)
    print(f"{report['runs']} inputs in {args.seconds:g} s")
    for key, count in sorted(report["outcomes"].items()):
        print(f"  {key:<34} {count}")
    if report["crashes"]:
        print(f"{len(report['crashes'])} CRASHES; the first:\n{report['crashes'][0]['traceback']}")
        return 1
    print("no crashes: every bad input got its documented error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
