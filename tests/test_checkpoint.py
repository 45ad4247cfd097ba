"""Checkpoints: ``nadam_ref.save`` / ``nadam_ref.load`` (issue 9).

Resuming is bit-identical to an uninterrupted run (every backend, any step,
hypothesis; and a torch run continued here matches torch); writing is atomic;
every truncation, flipped byte, wrong type or missing key is a
CheckpointError and never a partly loaded optimizer.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fuzz_loaders import rezip, zip_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trust import BACKEND_PARAMS, bits, make_problem, on_backend, snapshot, to_host

import nadam_ref
from nadam_ref import NAdam, Parameter, checkpoint
from nadam_ref.checkpoint import CheckpointError

FAST = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def state_bits(sd: dict) -> dict:
    """A state_dict with every array and scalar replaced by its exact bits."""
    return {
        "state": {k: {n: bits(v) for n, v in s.items()} for k, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a two-group optimizer with float32 scalars, a complex
    parameter and one parameter without state, and its state_dict."""
    rng = np.random.default_rng(3)
    params = [
        Parameter(rng.standard_normal((2, 3)).astype(np.float32)),
        Parameter((rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64)),
        Parameter(rng.standard_normal(3)),
        Parameter(np.zeros(2)),
    ]
    opt = NAdam(
        [{"params": params[:2]}, {"params": params[2:], "lr": 1e-2, "maximize": True, "note": "x"}],
        scalar_dtype=np.float32,
        backend="numpy",
    )
    for _ in range(3):
        for p in params[:3]:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()
    path = tmp_path / "opt.ckpt"
    nadam_ref.save(opt.state_dict(), path)
    return path, opt.state_dict()


def test_round_trip_is_exact(saved):
    path, sd = saved
    loaded = nadam_ref.load(path)
    assert state_bits(loaded) == state_bits(sd)
    assert set(loaded["state"]) == {0, 1, 2}  # parameter 3 never had a gradient
    assert type(loaded["state"][0]["step"]) is np.float32 and loaded["param_groups"][0][
        "betas"
    ] == (0.9, 0.999)
    assert loaded["param_groups"][1]["note"] == "x"  # extra group entries survive, as in torch


def test_file_is_a_plain_npz_without_pickle(saved):
    """np.load with allow_pickle=False reads every member; the metadata is JSON."""
    path, sd = saved
    with np.load(path, allow_pickle=False) as z:
        assert all(z[name].dtype != object for name in z.files)
        meta = json.loads(str(z["metadata"]))
        np.testing.assert_array_equal(z["state.1.exp_avg"], sd["state"][1]["exp_avg"])
    assert meta["format"] == checkpoint.FORMAT and meta["version"] == checkpoint.VERSION
    assert meta["state"] == [0, 1, 2] and meta["param_groups"][1]["lr"] == 1e-2


def test_same_state_gives_same_bytes(saved, tmp_path):
    path, sd = saved
    again = tmp_path / "again.ckpt"
    nadam_ref.save(nadam_ref.load(path), again)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@settings(FAST, max_examples=20)
@given(
    k=st.integers(0, 12),
    n=st.integers(1, 5),
    scalar=st.sampled_from([np.float32, np.float64]),
    decoupled=st.booleans(),
)
def test_resume_from_checkpoint_is_bit_identical(backend, tmp_path, k, n, scalar, decoupled):
    """Stop after k steps, save, load into a fresh optimizer over copies of the
    parameters, take n more steps: the same bits as n more steps without stopping."""
    rng = np.random.default_rng(k * 7 + n)
    hosts = [rng.standard_normal(5).astype(np.float32), rng.standard_normal((2, 2))]
    grads = [[rng.standard_normal(h.shape).astype(h.dtype) for h in hosts] for _ in range(k + n)]

    def build(arrays):
        ps = [Parameter(on_backend(backend, a)) for a in arrays]
        return ps, NAdam(
            ps,
            lr=1e-2,
            weight_decay=0.01,
            decoupled_weight_decay=decoupled,
            scalar_dtype=scalar,
            backend=backend,
        )

    def take(ps, opt, gs):
        for g_step in gs:
            for p, g in zip(ps, g_step):
                p.grad = on_backend(backend, g)
            opt.step()

    ps, opt = build(hosts)
    take(ps, opt, grads[:k])
    path = tmp_path / f"resume-{backend}.ckpt"
    nadam_ref.save(opt.state_dict(), path)
    resumed_ps, resumed = build([to_host(backend, p.data) for p in ps])
    resumed.load_state_dict(nadam_ref.load(path))
    take(ps, opt, grads[k:])
    take(resumed_ps, resumed, grads[k:])
    assert snapshot(resumed)["params"] == snapshot(opt)["params"]
    assert snapshot(resumed)["state"] == snapshot(opt)["state"]


def test_torch_run_continued_from_a_checkpoint_matches_torch(tmp_path):
    """A torch.optim.NAdam run, stopped after 20 steps, saved through
    nadam_ref.save, and continued here for 30 steps, stays within float32
    rounding of torch continuing on its own."""
    torch = pytest.importorskip(
        "torch", reason="torch is needed to compare a resumed run with torch"
    )
    from nadam_ref.torch_interop import from_torch_state_dict

    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(6).astype(np.float32)
    grads = rng.standard_normal((50, 6)).astype(np.float32)
    t = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    topt = torch.optim.NAdam([t], lr=1e-2, foreach=False)
    for g in grads[:20]:
        t.grad = torch.from_numpy(g.copy())
        topt.step()
    nadam_ref.save(from_torch_state_dict(topt.state_dict()), tmp_path / "torch.ckpt")
    p = Parameter(t.detach().numpy().copy())
    opt = NAdam([p], lr=1e-2, scalar_dtype=np.float32)
    opt.load_state_dict(nadam_ref.load(tmp_path / "torch.ckpt"))
    for g in grads[20:]:
        t.grad = torch.from_numpy(g.copy())
        topt.step()
        p.grad = g.copy()
        opt.step()
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        opt.state[p]["exp_avg_sq"], topt.state[t]["exp_avg_sq"].numpy(), rtol=1e-6
    )
    assert float(opt.state[p]["step"]) == 50.0


# -- atomic writes ------------------------------------------------------------------------


def _leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


@pytest.mark.parametrize("fail_at", ["write_array", "fsync", "replace"])
def test_crash_while_writing_keeps_the_old_checkpoint(saved, monkeypatch, fail_at):
    """A failure mid-write (data half written, before the flush to disk, or at
    the rename) leaves the previous file byte for byte and no temporary file."""
    path, sd = saved
    old = path.read_bytes()
    newer = copy.deepcopy(sd)
    newer["param_groups"][0]["lr"] = 0.5

    def boom(*args, **kwargs):
        raise OSError(f"simulated crash in {fail_at}")

    if fail_at == "write_array":
        real = np.lib.format.write_array
        calls = []

        def half(fp, array, *args, **kwargs):  # the third array fails after two are written
            calls.append(1)
            if len(calls) == 3:
                fp.write(b"partial")
                boom()
            return real(fp, array, *args, **kwargs)

        monkeypatch.setattr(np.lib.format, "write_array", half)
    else:
        monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="simulated crash"):
        nadam_ref.save(newer, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert _leftovers(path.parent) == []
    nadam_ref.save(newer, path)  # and a later save succeeds
    assert nadam_ref.load(path)["param_groups"][0]["lr"] == 0.5


#: A process that saves a checkpoint of lr=<argv[2]> to argv[1] and stops half-way through
#: writing its temporary file until a line arrives on stdin.
STALLED_SAVE = """
import sys

import numpy as np

import nadam_ref
from nadam_ref import checkpoint

opt = nadam_ref.NAdam([np.zeros(1000)], lr=float(sys.argv[2]), backend="numpy")
opt.param_groups[0]["params"][0].grad = np.ones(1000)
opt.step()
write = checkpoint._write_npz

def stalled(f, metadata, arrays):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
    f.seek(0)
    f.truncate()
    write(f, metadata, arrays)

checkpoint._write_npz = stalled
nadam_ref.save(opt.state_dict(), sys.argv[1])
print("saved", flush=True)
"""


def _stalled_save(path, lr):
    child = subprocess.Popen(
        [sys.executable, "-c", STALLED_SAVE, str(path), str(lr)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert child.stdout.readline().strip() == "writing"
    return child


def test_a_killed_save_leaves_its_temporary_file_until_the_next_save(saved):
    """SIGKILL cannot be caught, so a save killed mid-write leaves its temporary file: it is
    named for the checkpoint and the process, and the next save of that path removes it,
    but not the file of a save still in progress, nor those of other checkpoints."""
    path, sd = saved
    old = path.read_bytes()
    killed = _stalled_save(path, 0.25)
    killed.kill()
    killed.wait()  # reaped: its pid is gone
    assert path.read_bytes() == old  # the checkpoint itself is intact
    (stray,) = _leftovers(path.parent)
    assert stray.startswith(f".{path.name}.nadam_ref-tmp.{killed.pid}.")
    other = path.parent / f".other.ckpt.nadam_ref-tmp.{killed.pid}.abc.tmp"
    other.write_bytes(b"")  # another checkpoint's: not this save's to remove
    running = _stalled_save(path, 0.5)
    (in_flight,) = set(_leftovers(path.parent)) - {stray, other.name}
    try:
        nadam_ref.save(sd, path)
        assert _leftovers(path.parent) == sorted([in_flight, other.name])
        assert nadam_ref.load(path)["param_groups"][0]["lr"] == sd["param_groups"][0]["lr"]
    finally:
        running.stdin.write("go on\n")
        running.stdin.close()
    assert running.stdout.read().strip() == "saved" and running.wait(timeout=60) == 0
    assert nadam_ref.load(path)["param_groups"][0]["lr"] == 0.5  # its rename still worked
    assert _leftovers(path.parent) == [other.name]


def test_save_keeps_permissions(saved):
    path, sd = saved
    os.chmod(path, 0o640)
    nadam_ref.save(sd, path)
    assert os.stat(path).st_mode & 0o777 == 0o640


BAD_STATE_DICTS = {
    "not a dict": (lambda sd: [sd], "state_dict"),
    "lr negative": (
        lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(lr=-1.0)),
        "learning rate",
    ),
    "lr NaN": (
        lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(lr=float("nan"))),
        r"\['lr'\] is nan",
    ),
    "option an object": (
        lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(note=object())),
        "note",
    ),
    "missing option": (lambda sd: _edit(sd, lambda s: s["param_groups"][0].pop("eps")), "eps"),
    "string step": (lambda sd: _edit(sd, lambda s: s["state"][0].update(step="3")), "step"),
    "object array": (
        lambda sd: _edit(
            sd, lambda s: s["state"][0].update(exp_avg=np.array([None] * 6).reshape(2, 3))
        ),
        "exp_avg",
    ),
    "shapes differ": (
        lambda sd: _edit(sd, lambda s: s["state"][0].update(exp_avg=np.zeros(3, np.float32))),
        "differ",
    ),
    "state of unlisted parameter": (
        lambda sd: _edit(sd, lambda s: s["state"].update({7: s["state"][0]})),
        "state",
    ),
    "mu_product above 1": (
        lambda sd: _edit(sd, lambda s: s["state"][0].update(mu_product=np.float32(2))),
        "mu_product",
    ),
}


def _edit(sd, change):
    sd = copy.deepcopy(sd)
    change(sd)
    return sd


@pytest.mark.parametrize("case", list(BAD_STATE_DICTS))
def test_invalid_state_dict_is_not_saved(saved, case):
    path, sd = saved
    old = path.read_bytes()
    spoil, named = BAD_STATE_DICTS[case]
    with pytest.raises(CheckpointError, match=named):
        nadam_ref.save(spoil(sd), path)
    assert path.read_bytes() == old and _leftovers(path.parent) == []


# -- corrupted files ----------------------------------------------------------------------


def _members(path) -> dict[str, bytes]:
    return zip_members(path.read_bytes())


def _with_metadata(path, change) -> bytes:
    """The checkpoint with its metadata JSON edited (and the zip rebuilt, so
    that only the content is wrong, not the CRCs)."""
    members = _members(path)
    meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]), allow_pickle=False)))
    change(meta)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(json.dumps(meta)), allow_pickle=False)
    members["metadata.npy"] = buf.getvalue()
    return rezip(members)


def _with_array(path, name, array) -> bytes:
    members = _members(path)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    members[f"{name}.npy"] = buf.getvalue()
    return rezip(members)


def _meta(change):
    return lambda path: _with_metadata(path, change)


def _pop(*keys):
    def change(meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def _set(value, *keys):
    def change(meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


CORRUPTIONS = {
    "empty file": (lambda p: b"", "not a readable checkpoint"),
    "not a zip": (lambda p: b"hello world" * 50, "not a readable checkpoint"),
    "truncated to half": (
        lambda p: p.read_bytes()[: len(p.read_bytes()) // 2],
        "not a readable checkpoint",
    ),
    "an ordinary npz": (
        lambda p: rezip({"a.npy": _members(p)["state.0.exp_avg.npy"]}),
        "no metadata",
    ),
    "metadata not JSON": (lambda p: _with_array(p, "metadata", np.array("{not json")), "JSON"),
    "metadata not a string": (lambda p: _with_array(p, "metadata", np.zeros(3)), "metadata"),
    "metadata an object array": (
        lambda p: _with_array(p, "metadata", np.array([{"a": 1}], dtype=object)),
        "metadata",
    ),
    "metadata a list": (_meta(lambda m: m.clear()), "format"),
    "wrong format": (_meta(_set("torch", "format")), "format"),
    "newer version": (_meta(_set(2, "version")), "version 2"),
    "version a string": (_meta(_set("1", "version")), "version"),
    "missing param_groups": (_meta(_pop("param_groups")), "param_groups"),
    "missing lr": (_meta(_pop("param_groups", 0, "lr")), "lr"),
    "lr a string": (_meta(_set("0.1", "param_groups", 0, "lr")), "lr"),
    "lr negative": (_meta(_set(-0.1, "param_groups", 0, "lr")), "learning rate"),
    "betas of one": (_meta(_set([0.9], "param_groups", 0, "betas")), "betas"),
    "maximize a string": (_meta(_set("yes", "param_groups", 1, "maximize")), "maximize"),
    "params not a list": (_meta(_set(3, "param_groups", 0, "params")), "params"),
    "params repeated": (_meta(_set([0, 1], "param_groups", 1, "params")), "repeats"),
    "state lists a parameter twice": (_meta(_set([0, 0, 2], "state")), "state"),
    "state names an unlisted parameter": (_meta(_set([0, 1, 9], "state")), "arrays"),
    "array entry missing": (_meta(_pop("arrays", "state.0.exp_avg")), "arrays"),
    "array dtype object": (_meta(_set("|O", "arrays", "state.0.exp_avg", "dtype")), "dtype"),
    "array shape wrong": (_meta(_set([3, 2], "arrays", "state.0.exp_avg", "shape")), "shape"),
    "array digest wrong": (_meta(_set("0" * 64, "arrays", "state.0.exp_avg", "sha256")), "sha256"),
    "array member missing": (
        lambda p: rezip({k: v for k, v in _members(p).items() if k != "state.2.step.npy"}),
        "missing",
    ),
    "extra member": (lambda p: rezip({**_members(p), "evil.npy": b"x"}), "extra"),
    "array replaced by an object array": (
        lambda p: _with_array(
            p, "state.0.exp_avg", np.array([None] * 6, dtype=object).reshape(2, 3)
        ),
        "state.0.exp_avg",
    ),
    "array of another shape": (
        lambda p: _with_array(p, "state.0.exp_avg", np.zeros(6, np.float32)),
        "state.0.exp_avg",
    ),
    "array values changed": (
        lambda p: _with_array(p, "state.0.exp_avg", np.ones((2, 3), np.float32)),
        "sha256",
    ),
    "step negative": (lambda p: _with_array(p, "state.0.step", np.float32(-1)), "state.0.step"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_checkpoint_is_a_clear_error_and_changes_nothing(saved, tmp_path, case):
    path, sd = saved
    make, named = CORRUPTIONS[case]
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(make(path))
    opt, _ = make_problem("numpy")
    before = snapshot(opt)
    with pytest.raises(CheckpointError, match=named) as info:
        opt.load_state_dict(nadam_ref.load(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert snapshot(opt) == before
    assert isinstance(info.value, ValueError)


def test_a_valid_checkpoint_with_invalid_values_is_refused(saved, tmp_path):
    """The semantic checks run on load too: a hand-made file that is a
    well-formed checkpoint but holds ∏μ = 3 is refused."""
    path, sd = saved
    members = _members(path)
    buf = io.BytesIO()
    value = np.float32(3)
    np.lib.format.write_array(buf, np.array(value), allow_pickle=False)
    members["state.0.mu_product.npy"] = buf.getvalue()
    meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]), allow_pickle=False)))
    meta["arrays"]["state.0.mu_product"]["sha256"] = hashlib.sha256(
        np.array(value).tobytes()
    ).hexdigest()
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(json.dumps(meta)), allow_pickle=False)
    members["metadata.npy"] = buf.getvalue()
    (tmp_path / "x.ckpt").write_bytes(rezip(members))
    with pytest.raises(CheckpointError, match=r"mu_product.*\[0, 1\]"):
        nadam_ref.load(tmp_path / "x.ckpt")


def test_every_truncation_and_every_flipped_byte(saved, tmp_path):
    """Systematically: truncation at every 11th byte, and every 5th byte XOR
    0xFF (header, metadata, array data and zip directory alike), either raise
    CheckpointError or, if the byte only lay in a field zip ignores, load the
    very same state."""
    path, sd = saved
    data = path.read_bytes()
    expected = state_bits(sd)
    bad = tmp_path / "bad.ckpt"
    for n in range(0, len(data), 11):
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            nadam_ref.load(bad)
    accepted = 0
    for i in range(0, len(data), 5):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            loaded = nadam_ref.load(bad)
        except CheckpointError:
            continue
        accepted += 1
        assert state_bits(loaded) == expected, f"byte {i} changed the state silently"
    assert accepted < len(data) // 50


@FAST
@given(data=st.data())
def test_random_corruptions_give_checkpoint_error(saved, tmp_path, data):
    """Hypothesis: several random edits at once (byte flips, cuts, insertions,
    swapped spans): a CheckpointError or exactly the saved state."""
    path, sd = saved
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "swap"]), label="kind")
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="at")
        if kind == "flip" and raw:
            raw[i] ^= data.draw(st.integers(1, 255), label="xor")
        elif kind == "cut":
            del raw[i : i + data.draw(st.integers(1, 64), label="length")]
        elif kind == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
        else:
            j = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="with")
            raw[i], raw[j] = raw[j], raw[i]
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(bytes(raw))
    try:
        loaded = nadam_ref.load(bad)
    except CheckpointError:
        return
    assert state_bits(loaded) == state_bits(sd)


json_junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=4),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(data=st.data())
def test_random_metadata_edits_give_checkpoint_error(saved, tmp_path, data):
    """Hypothesis: any entry of the metadata replaced by junk of any JSON type,
    or deleted: a CheckpointError, or a state the optimizer accepts."""
    path, sd = saved
    paths = []

    def walk(node, at):
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for k, v in items:
            paths.append(at + (k,))
            walk(v, at + (k,))

    members = _members(path)
    meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]), allow_pickle=False)))
    walk(meta, ())
    where = data.draw(st.sampled_from(paths), label="where")
    delete = data.draw(st.booleans(), label="delete")
    junk = data.draw(json_junk, label="junk")

    def change(m):
        target = m
        for k in where[:-1]:
            target = target[k]
        if delete and isinstance(target, dict):
            del target[where[-1]]
        else:
            target[where[-1]] = junk

    bad = tmp_path / "meta.ckpt"
    bad.write_bytes(_with_metadata(path, change))
    try:
        loaded = nadam_ref.load(bad)
    except CheckpointError:
        return
    # it loaded: then it is a state an optimizer of this structure accepts or refuses cleanly
    params = [
        Parameter(np.zeros((2, 3), np.float32)),
        Parameter(np.zeros(4, np.complex64)),
        Parameter(np.zeros(3)),
        Parameter(np.zeros(2)),
    ]
    opt = NAdam(
        [{"params": params[:2]}, {"params": params[2:]}], scalar_dtype=np.float32, backend="numpy"
    )
    before = snapshot(opt)
    try:
        opt.load_state_dict(loaded)
    except ValueError:
        assert snapshot(opt) == before


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        nadam_ref.load(tmp_path / "nope.ckpt")


def test_short_fuzz_run_of_the_loaders():
    """The fuzzer of tests/fuzz_loaders.py on every loader (checkpoints, golden
    files, the verifier's output reader), for three seconds."""
    import fuzz_loaders

    report = fuzz_loaders.fuzz(seconds=3.0, seed=0)
    assert report["crashes"] == [], report["crashes"][0]["traceback"]
    assert report["runs"] > 50
