"""The golden file format (version 2): one case per file, as JSON or ``.npz``.

JSON form (validated against the JSON Schema ``schema.json`` shipped beside
this module)::

    {"format": "nadam-ref-golden", "version": 1 | 2, "name", "description",
     "profile", "profile_options", "dtype",
     "groups": [{"hyperparameters": {...}, "params": [0, 1]}],   # as given to the framework
     "rules": [{...} per parameter],     # what is computed: rounded lr/β/0.96, ψ, dtypes, split
     "shapes": [[...] per parameter], "steps", "record_steps": [1, 2, ...],
     "loop": "open" | "closed:sphere",
     "params0": [flat θ₀ per parameter], "grads": [flat [steps, *shape] per parameter] | null,
     "expected":  {"param", "exp_avg", "exp_avg_sq": [flat [len(record_steps), *shape]],
                   "mu_product": [[len(record_steps)] per parameter]},
     "tolerance": {same layout: the absolute error a correct implementation may have},
     "tolerance_derivation", "generated_by", "oracle_digits",
     # version 2 only, each optional:
     "start": {"step": [k per parameter], "mu_product": [∏_{i≤k} μ_i per parameter],
               "exp_avg": [flat m_k per parameter], "exp_avg_sq": [flat v_k per parameter]}}
    with, in version 2, an optional "lr_schedule" in a group (the learning rate of
    each step as given to the framework, ``steps`` numbers) and in a rule (the
    same as the framework holds it, e.g. rounded to float32).

Version 2 adds two things real training does.  A *schedule*: the learning
rate changes every step (any scheduler), so the group's ``lr`` is only the
initial value and ``lr_schedule[s-1]`` is the one of step s.  A *resume*: the
case starts from a checkpoint taken after k steps, θ_k = ``params0``, m_k,
v_k, the stored step k and ∏_{i≤k} μ_i = ``start``; its steps s = 1, 2, …
are the optimizer's steps t = k + s (the schedule μ_t and the bias
corrections use t).  A case that uses neither is written as version 1, which
a version-1 reader reads; version-1 files load as they always did.

Arrays are flat lists in C order; complex arrays are (real, imag) pairs, and
a complex tolerance bounds the real and the imaginary error separately.
A case passes when |actual − expected| ≤ tolerance for every element of θ
(and of m, v, ∏μ where the output has them) at every recorded step.
Each number is written as the shortest decimal that reads back as the same
float64 (float32 values are exactly representable as float64), so any
correct JSON parser recovers every bit; non-finite values are the strings
``"inf"``, ``"-inf"``, ``"nan"``.

``.npz`` form: the same document without its arrays, as UTF-8 JSON in a
uint8 array ``meta``, plus one ``.npy`` array per array field, named
``params0_0``, ``grads_0``, ``expected_param_0``, ``tolerance_exp_avg_sq_1``, …,
in the case's dtype and shape.  No pickles, fixed zip timestamps (so the
bytes are reproducible).

:func:`load` raises :class:`GoldenFormatError` (a ValueError) with a
one-line message naming the field for any malformed content, and OSError
only when the file cannot be read at all.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..profiles import HYPERPARAMETERS, get
from ..schedule import MOMENTUM_CORRECTIONS

FORMAT, VERSION = "nadam-ref-golden", 2
VERSIONS = (1, 2)
QUANTITIES = ("param", "exp_avg", "exp_avg_sq", "mu_product")
RULE_KEYS = (
    HYPERPARAMETERS[:5]
    + ("momentum_base",)
    + HYPERPARAMETERS[5:]
    + ("split_update", "compute_dtype", "scalar_dtype", "state_dtype")
)
#: Rules written only where a profile sets them (so the files of the profiles
#: that do not stay as they were), with the value an absent key means.
OPTIONAL_RULE_KEYS = {
    "split_denominator": False,
    "momentum_correction": "next",
    "accumulated_powers": False,
    "one_minus_beta1": None,
    "one_minus_beta2": None,
    "decay_factor_dtype": None,
}
DTYPES = ("float32", "float64", "complex64", "complex128")


def arithmetic(rule: dict) -> dict:
    """A case's rule as the arithmetic keywords of
    :func:`nadam_ref.schedule.step_coefficients`: without the oracle's
    ``state_dtype`` and the per-step ``lr_schedule`` (whose entry for the
    step replaces ``lr``)."""
    return {k: v for k, v in rule.items() if k not in ("state_dtype", "lr_schedule")}


#: Largest array (elements) a file may declare; protects the loader from absurd shapes.
MAX_ELEMENTS = 2_000_000_000


class GoldenFormatError(ValueError):
    """A golden file (or an ACTUAL output) is malformed; the message names the field."""


@dataclass
class Case:
    """One golden case.

    ``params0[i]``: parameter i's initial array; ``grads[i]``: its gradients,
    shaped [steps, *shape] (None for the closed loop, whose gradient is θ);
    ``expected[q][i]`` and ``tolerance[q][i]`` for q in "param", "exp_avg",
    "exp_avg_sq": arrays shaped [len(record_steps), *shape], and for
    "mu_product": shaped [len(record_steps)].  Row r holds the values after
    step ``record_steps[r]`` (steps count from 1).
    """

    name: str
    profile: str
    dtype: np.dtype
    groups: list[dict]
    rules: list[dict]
    steps: int
    record_steps: list[int]
    params0: list[np.ndarray]
    grads: list[np.ndarray] | None
    expected: dict[str, list[np.ndarray]]
    tolerance: dict[str, list[np.ndarray]]
    description: str = ""
    profile_options: dict = field(default_factory=dict)
    loop: str = "open"
    tolerance_derivation: str = ""
    generated_by: str = ""
    oracle_digits: int = 0
    #: Version 2: the checkpoint the case starts from, {"step": [k], "mu_product":
    #: [∏μ], "exp_avg": [m arrays], "exp_avg_sq": [v arrays]} per parameter; None: a fresh start.
    start: dict | None = None

    @property
    def hyperparameters(self) -> dict:
        """The first parameter group's hyperparameters (see ``groups`` for all)."""
        return self.groups[0]["hyperparameters"]

    @property
    def shapes(self) -> list[tuple]:
        return [tuple(p.shape) for p in self.params0]

    @property
    def version(self) -> int:
        """2 when the case uses a learning-rate schedule or starts from a checkpoint, else 1."""
        scheduled = any("lr_schedule" in g for g in self.groups)
        return 2 if scheduled or self.start is not None else 1

    def group_of(self, i: int) -> dict:
        """The parameter group parameter ``i`` belongs to."""
        return next(g for g in self.groups if i in g["params"])

    def learning_rates(self, i: int) -> np.ndarray:
        """Parameter i's learning rate at each of the case's steps, as given to the framework."""
        g = self.group_of(i)
        if "lr_schedule" in g:
            return np.asarray(g["lr_schedule"], dtype=np.float64)
        return np.full(self.steps, g["hyperparameters"]["lr"], dtype=np.float64)

    def start_state(self, i: int) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(stored step k, ∏μ, m, v) parameter i starts from: (0, 1, 0, 0) unless resuming."""
        if self.start is None:
            z = np.zeros_like(self.params0[i])
            return 0.0, 1.0, z, z.copy()
        s = self.start
        return (
            float(s["step"][i]),
            float(s["mu_product"][i]),
            s["exp_avg"][i],
            s["exp_avg_sq"][i],
        )

    def __repr__(self) -> str:
        return (
            f"Case({self.name!r}, profile={self.profile!r}, dtype={self.dtype.name}, "
            f"shapes={self.shapes}, steps={self.steps})"
        )


# -- numbers -------------------------------------------------------------------------------


def _num_out(x: float):
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _num_in(x, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise GoldenFormatError(f"{where}: expected a number, got {type(x).__name__}")
    if isinstance(x, str):
        if x not in ("inf", "-inf", "nan"):
            raise GoldenFormatError(
                f"{where}: expected a number or 'inf', '-inf', 'nan', got {x[:40]!r}"
            )
        return float(x)
    return float(x)


def _flat_out(a: np.ndarray) -> list:
    a = np.asarray(a)
    if a.dtype.kind == "c":
        a = np.stack([a.real, a.imag], axis=-1)
    return [_num_out(x) for x in a.reshape(-1).tolist()]


def _array_in(values, dtype: np.dtype, shape: tuple, where: str) -> np.ndarray:
    if not isinstance(values, list):
        raise GoldenFormatError(f"{where}: expected a list of numbers")
    n = math.prod(shape) * (2 if dtype.kind == "c" else 1)
    if len(values) != n:
        raise GoldenFormatError(
            f"{where}: has {len(values)} numbers, expected {n} for shape {list(shape)}"
        )
    real = np.array([_num_in(x, where) for x in values], dtype=np.float64)
    with np.errstate(over="ignore"):
        narrow = real.astype(np.zeros(0, dtype).real.dtype)
    if not np.array_equal(narrow.astype(np.float64), real, equal_nan=True):
        k = int(np.flatnonzero(~((narrow.astype(np.float64) == real) | np.isnan(real)))[0])
        raise GoldenFormatError(
            f"{where}: value {real[k]!r} at index {k} is not exactly a {narrow.dtype} number"
        )
    if dtype.kind == "c":
        real = real.reshape(-1, 2)
        return (real[:, 0] + 1j * real[:, 1]).astype(dtype).reshape(shape)
    return real.astype(dtype).reshape(shape)


# -- documents -----------------------------------------------------------------------------


def _meta(case: Case) -> dict:
    def hp_out(hp):
        return {k: (hp[k] if isinstance(hp[k], bool) else _num_out(hp[k])) for k in HYPERPARAMETERS}

    def rule_out(r):
        out = {}
        optional = [k for k, d in OPTIONAL_RULE_KEYS.items() if r.get(k, d) != d]
        schedule = ("lr_schedule",) if "lr_schedule" in r else ()
        for k in RULE_KEYS + tuple(optional) + schedule:
            v = r[k]
            if k.endswith("dtype"):
                out[k] = None if v is None else np.dtype(v).name
            elif isinstance(v, (bool, np.bool_)):
                out[k] = bool(v)
            elif isinstance(v, str):
                out[k] = v
            elif k == "lr_schedule":
                out[k] = _flat_out(np.asarray(v, dtype=np.float64))
            else:
                out[k] = _num_out(v)
        return out

    def group_out(g):
        out = {"hyperparameters": hp_out(g["hyperparameters"]), "params": list(g["params"])}
        if "lr_schedule" in g:
            out["lr_schedule"] = _flat_out(np.asarray(g["lr_schedule"], dtype=np.float64))
        return out

    return {
        "format": FORMAT,
        "version": case.version,
        "name": case.name,
        "description": case.description,
        "profile": case.profile,
        "profile_options": dict(case.profile_options),
        "dtype": np.dtype(case.dtype).name,
        "groups": [group_out(g) for g in case.groups],
        "rules": [rule_out(r) for r in case.rules],
        "shapes": [list(s) for s in case.shapes],
        "steps": int(case.steps),
        "record_steps": [int(s) for s in case.record_steps],
        "loop": case.loop,
    }


def _tail(case: Case) -> dict:
    return {
        "tolerance_derivation": case.tolerance_derivation,
        "generated_by": case.generated_by,
        "oracle_digits": int(case.oracle_digits),
    }


def _start_meta(case: Case) -> dict:
    """The start's scalars (its arrays travel with the other arrays)."""
    s = case.start
    return {
        "step": [int(k) for k in s["step"]],
        "mu_product": [_num_out(x) for x in s["mu_product"]],
    }


def to_json(case: Case) -> str:
    """The case as JSON text (deterministic: the same case gives the same bytes)."""
    doc = _meta(case)
    doc["params0"] = [_flat_out(a) for a in case.params0]
    doc["grads"] = None if case.grads is None else [_flat_out(a) for a in case.grads]
    for part in ("expected", "tolerance"):
        src = getattr(case, part)
        doc[part] = {q: [_flat_out(a) for a in src[q]] for q in QUANTITIES}
    doc.update(_tail(case))
    if case.start is not None:
        doc["start"] = {
            **_start_meta(case),
            **{q: [_flat_out(a) for a in case.start[q]] for q in ("exp_avg", "exp_avg_sq")},
        }
    # Metadata indented, each array on one line.
    lines = ["{"]
    items = list(doc.items())
    for n, (k, v) in enumerate(items):
        sep = "," if n < len(items) - 1 else ""
        if isinstance(v, dict) and k in ("expected", "tolerance", "start"):
            inner = ",\n".join(
                f"  {json.dumps(q)}: [\n"
                + ",\n".join("   " + json.dumps(a, separators=(",", ":")) for a in arrs)
                + "\n  ]"
                for q, arrs in v.items()
            )
            lines.append(f" {json.dumps(k)}: {{\n{inner}\n }}{sep}")
        elif isinstance(v, list) and k in ("params0", "grads"):
            body = ",\n".join("  " + json.dumps(a, separators=(",", ":")) for a in v)
            lines.append(f" {json.dumps(k)}: [\n{body}\n ]{sep}")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{sep}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_npz(case: Case, fileobj) -> None:
    """Write the case's ``.npz`` form to a seekable binary file, one array at
    a time (a large case is never held twice in memory)."""
    meta = {**_meta(case), **_tail(case)}
    if case.start is not None:
        meta["start"] = _start_meta(case)
    arrays = {"meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8)}
    for i, a in enumerate(case.params0):
        arrays[f"params0_{i}"] = a
    for i, a in enumerate(case.grads or []):
        arrays[f"grads_{i}"] = a
    for part in ("expected", "tolerance"):
        for q in QUANTITIES:
            for i, a in enumerate(getattr(case, part)[q]):
                arrays[f"{part}_{q}_{i}"] = a
    for q in ("exp_avg", "exp_avg_sq") if case.start is not None else ():
        for i, a in enumerate(case.start[q]):
            arrays[f"start_{q}_{i}"] = a
    with zipfile.ZipFile(fileobj, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            a = np.asarray(a, order="C")
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(a)
            )
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info._compresslevel = 9  # as writestr(..., compresslevel=9) sets it
            # The size known in advance, as writestr knows it (it decides ZIP64 the same way).
            info.file_size = len(header.getvalue()) + a.nbytes
            with z.open(info, "w") as dest:
                dest.write(header.getvalue())
                data = memoryview(a.reshape(-1).view(np.uint8))
                for k in range(0, len(data), 1 << 24):
                    dest.write(data[k : k + (1 << 24)])


def to_npz(case: Case) -> bytes:
    """The case as ``.npz`` bytes (deterministic, no pickles)."""
    buf = io.BytesIO()
    _write_npz(case, buf)
    return buf.getvalue()


def save(case: Case, path) -> Path:
    """Write ``case`` to ``path`` (``.json`` or ``.npz``), atomically; an
    ``.npz`` is streamed to disk array by array."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                _write_npz(case, f)
        else:
            tmp.write_bytes(to_json(case).encode())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# -- loading -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of the format (``nadam_ref/golden/schema.json``)."""
    return json.loads(resources.files("nadam_ref.golden").joinpath("schema.json").read_text())


def _validate(doc) -> None:
    try:
        import jsonschema
    except ImportError:  # the structural checks in _build still run
        return
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(str(error.message).split())
        if len(message) > 160:
            message = message[:157] + "..."
        raise GoldenFormatError(f"field {where}: {message}")


def load(path) -> Case:
    """Read a golden case from a ``.json`` or ``.npz`` file (by content)."""
    data = Path(path).read_bytes()
    return loads(data, source=str(path))


def loads(data: bytes, source: str = "<bytes>") -> Case:
    """Read a golden case from the bytes of a JSON or ``.npz`` file."""
    try:
        if data[:2] == b"PK":
            return _from_npz(data)
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise GoldenFormatError(
                f"{source}: not JSON nor .npz ({' '.join(str(e).split())[:120]})"
            ) from None
        _validate(doc)
        return _build(
            doc,
            lambda part, i, dtype, shape, where: _array_in(
                _get(doc, part, i, where), dtype, shape, where
            ),
        )
    except GoldenFormatError:
        raise
    except RecursionError:
        raise GoldenFormatError(f"{source}: nested too deeply") from None
    except Exception as e:  # anything else a corrupted file provokes is a format error too
        raise GoldenFormatError(
            f"{source}: malformed ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
        ) from None


def _get(doc, part, i, where):
    node = doc
    for key in part:
        if not isinstance(node, dict) or key not in node:
            raise GoldenFormatError(f"{where}: missing")
        node = node[key]
    if not isinstance(node, list) or i >= len(node):
        raise GoldenFormatError(f"{where}: missing")
    return node[i]


def _from_npz(data: bytes) -> Case:
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        files = set(z.files)
    except Exception as e:
        raise GoldenFormatError(
            f"not a readable .npz ({type(e).__name__}: {' '.join(str(e).split())[:100]})"
        ) from None
    if "meta" not in files:
        raise GoldenFormatError("field meta: missing from the .npz")
    meta_raw = z["meta"]
    if meta_raw.dtype != np.uint8 or meta_raw.ndim != 1:
        raise GoldenFormatError("field meta: must be a 1-D uint8 array of UTF-8 JSON")
    try:
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GoldenFormatError("field meta: not UTF-8 JSON") from None
    if not isinstance(meta, dict):
        raise GoldenFormatError("field meta: must be a JSON object")
    # Validate the metadata with the schema, arrays stood in by empty lists.
    stand_in = dict(meta)
    n = len(meta.get("shapes", [])) if isinstance(meta.get("shapes"), list) else 0
    stand_in["params0"] = [[] for _ in range(max(n, 1))]
    stand_in["grads"] = None if meta.get("loop") != "open" else [[] for _ in range(max(n, 1))]
    for part in ("expected", "tolerance"):
        stand_in[part] = {q: [[] for _ in range(max(n, 1))] for q in QUANTITIES}
    if isinstance(meta.get("start"), dict):
        stand_in["start"] = {
            **meta["start"],
            **{q: [[] for _ in range(max(n, 1))] for q in ("exp_avg", "exp_avg_sq")},
        }
    _validate(stand_in)

    def array(part, i, dtype, shape, where):
        key = "_".join(part) + f"_{i}"
        if key not in files:
            raise GoldenFormatError(f"field {where}: array {key!r} missing from the .npz")
        a = z[key]
        if a.shape != tuple(shape):
            raise GoldenFormatError(
                f"field {where}: has shape {list(a.shape)}, expected {list(shape)}"
            )
        if a.dtype != dtype:
            raise GoldenFormatError(f"field {where}: has dtype {a.dtype}, expected {dtype}")
        return a

    return _build(meta, array)


def _build(doc: dict, array) -> Case:
    """Check everything the schema cannot say and assemble the Case."""
    dtype = np.dtype(doc["dtype"])
    get(doc["profile"])
    shapes = [tuple(s) for s in doc["shapes"]]
    n = len(shapes)
    for i, s in enumerate(shapes):
        if math.prod(s) > MAX_ELEMENTS:
            raise GoldenFormatError(
                f"field shapes/{i}: {list(s)} is larger than {MAX_ELEMENTS} elements"
            )
    steps, record = doc["steps"], doc["record_steps"]
    if any(b <= a for a, b in zip(record, record[1:])) or record[-1] > steps:
        raise GoldenFormatError(
            f"field record_steps: must increase strictly and end at most at steps = {steps}"
        )
    if steps * max((math.prod(s) for s in shapes), default=0) > MAX_ELEMENTS:
        raise GoldenFormatError(
            f"field steps: {steps} steps of these shapes exceed {MAX_ELEMENTS} elements"
        )
    if len(doc["rules"]) != n:
        raise GoldenFormatError(f"field rules: has {len(doc['rules'])} entries for {n} parameters")
    seen = sorted(i for g in doc["groups"] for i in g["params"])
    if seen != list(range(n)):
        raise GoldenFormatError(
            f"field groups: the groups' params must list 0..{n - 1} once each, got {seen}"
        )
    version = doc["version"]
    v2 = [f"groups/{k}/lr_schedule" for k, g in enumerate(doc["groups"]) if "lr_schedule" in g]
    v2 += [f"rules/{k}/lr_schedule" for k, r in enumerate(doc["rules"]) if "lr_schedule" in r]
    v2 += ["start"] if doc.get("start") is not None else []
    if version < 2 and v2:
        raise GoldenFormatError(f"field {v2[0]}: needs format version 2, the file says {version}")
    groups = []
    for k, g in enumerate(doc["groups"]):
        hp = {
            key: (v if isinstance(v, bool) else _num_in(v, f"groups/{k}/hyperparameters/{key}"))
            for key, v in g["hyperparameters"].items()
        }
        group = {"hyperparameters": hp, "params": list(g["params"])}
        if "lr_schedule" in g:
            group["lr_schedule"] = _schedule_in(g["lr_schedule"], steps, f"groups/{k}/lr_schedule")
        groups.append(group)
    rules = []
    for k, r in enumerate(doc["rules"]):
        rule = dict(OPTIONAL_RULE_KEYS)
        for key, v in r.items():
            if key.endswith("dtype"):
                rule[key] = None if v is None else np.dtype(v)
            elif isinstance(v, bool) or key == "momentum_correction":
                rule[key] = v
            elif key == "lr_schedule":
                rule[key] = _schedule_in(v, steps, f"rules/{k}/lr_schedule")
            else:
                rule[key] = _num_in(v, f"rules/{k}/{key}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= rule[key] < 1.0:
                raise GoldenFormatError(
                    f"field rules/{k}/{key}: must lie in [0, 1), got {rule[key]}"
                )
        for key in ("lr", "eps", "weight_decay", "momentum_decay"):
            if not rule[key] >= 0.0:
                raise GoldenFormatError(f"field rules/{k}/{key}: must be >= 0, got {rule[key]}")
        if rule["momentum_correction"] not in MOMENTUM_CORRECTIONS:
            raise GoldenFormatError(
                f"field rules/{k}/momentum_correction: must be one of {MOMENTUM_CORRECTIONS}"
            )
        rules.append(rule)
    closed = doc["loop"] != "open"
    if closed and dtype.kind == "c":
        raise GoldenFormatError("field loop: the closed loop is defined for real dtypes only")
    params0 = [array(("params0",), i, dtype, shapes[i], f"params0/{i}") for i in range(n)]
    if closed:
        if isinstance(doc.get("grads", None), list):
            raise GoldenFormatError("field grads: must be null for a closed loop")
        grads = None
    else:
        grads = [array(("grads",), i, dtype, (steps,) + shapes[i], f"grads/{i}") for i in range(n)]
    start = None
    if doc.get("start") is not None:
        st = doc["start"]
        for key in ("step", "mu_product"):
            if len(st[key]) != n:
                raise GoldenFormatError(
                    f"field start/{key}: has {len(st[key])} entries for {n} parameters"
                )
        start = {
            "step": [int(k) for k in st["step"]],
            "mu_product": [
                _num_in(x, f"start/mu_product/{i}") for i, x in enumerate(st["mu_product"])
            ],
        }
        for q in ("exp_avg", "exp_avg_sq"):
            start[q] = [
                array(("start", q), i, dtype, shapes[i], f"start/{q}/{i}") for i in range(n)
            ]
    parts = {}
    for part in ("expected", "tolerance"):
        parts[part] = {}
        for q in QUANTITIES:
            if q == "mu_product":
                parts[part][q] = [
                    array((part, q), i, np.dtype(np.float64), (len(record),), f"{part}/{q}/{i}")
                    for i in range(n)
                ]
            else:
                parts[part][q] = [
                    array((part, q), i, dtype, (len(record),) + shapes[i], f"{part}/{q}/{i}")
                    for i in range(n)
                ]
    return Case(
        name=doc["name"],
        profile=doc["profile"],
        dtype=dtype,
        groups=groups,
        rules=rules,
        steps=steps,
        record_steps=list(record),
        params0=params0,
        grads=grads,
        expected=parts["expected"],
        tolerance=parts["tolerance"],
        description=doc.get("description", ""),
        profile_options=dict(doc["profile_options"]),
        loop=doc["loop"],
        tolerance_derivation=doc.get("tolerance_derivation", ""),
        generated_by=doc.get("generated_by", ""),
        oracle_digits=int(doc.get("oracle_digits", 0)),
        start=start,
    )


def _schedule_in(values, steps: int, where: str) -> np.ndarray:
    """A learning-rate schedule: ``steps`` numbers, each finite and ≥ 0."""
    if not isinstance(values, list) or len(values) != steps:
        n = len(values) if isinstance(values, list) else 0
        raise GoldenFormatError(f"field {where}: has {n} numbers, expected one per step ({steps})")
    lr = np.array([_num_in(x, where) for x in values], dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(lr) & (lr >= 0)))
    if bad.size:
        raise GoldenFormatError(
            f"field {where}: step {int(bad[0]) + 1} has learning rate {lr[bad[0]]!r}; "
            "it must be finite and >= 0"
        )
    return lr
