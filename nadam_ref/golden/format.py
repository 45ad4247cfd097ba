"""The golden file format (version 1): one case per file, as JSON or ``.npz``.

JSON form (validated against the JSON Schema ``schema.json`` shipped beside
this module)::

    {"format": "nadam-ref-golden", "version": 1, "name", "description",
     "profile", "profile_options", "dtype",
     "groups": [{"hyperparameters": {...}, "params": [0, 1]}],   # as given to the framework
     "rules": [{...} per parameter],     # what is computed: rounded lr/β/0.96, ψ, dtypes, split
     "shapes": [[...] per parameter], "steps", "record_steps": [1, 2, ...],
     "loop": "open" | "closed:sphere",
     "params0": [flat θ₀ per parameter], "grads": [flat [steps, *shape] per parameter] | null,
     "expected":  {"param", "exp_avg", "exp_avg_sq": [flat [len(record_steps), *shape]],
                   "mu_product": [[len(record_steps)] per parameter]},
     "tolerance": {same layout: the absolute error a correct implementation may have},
     "tolerance_derivation", "generated_by", "oracle_digits"}

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

from .profiles import HYPERPARAMETERS, get_profile

FORMAT, VERSION = "nadam-ref-golden", 1
QUANTITIES = ("param", "exp_avg", "exp_avg_sq", "mu_product")
RULE_KEYS = (
    HYPERPARAMETERS[:5]
    + ("momentum_base",)
    + HYPERPARAMETERS[5:]
    + ("split_update", "compute_dtype", "scalar_dtype", "state_dtype")
)
DTYPES = ("float32", "float64", "complex64", "complex128")
#: Largest array (elements) a file may declare; protects the loader from absurd shapes.
MAX_ELEMENTS = 50_000_000


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

    @property
    def hyperparameters(self) -> dict:
        """The first parameter group's hyperparameters (see ``groups`` for all)."""
        return self.groups[0]["hyperparameters"]

    @property
    def shapes(self) -> list[tuple]:
        return [tuple(p.shape) for p in self.params0]

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
        for k in RULE_KEYS:
            v = r[k]
            if k.endswith("dtype"):
                out[k] = None if v is None else np.dtype(v).name
            elif isinstance(v, (bool, np.bool_)):
                out[k] = bool(v)
            else:
                out[k] = _num_out(v)
        return out

    return {
        "format": FORMAT,
        "version": VERSION,
        "name": case.name,
        "description": case.description,
        "profile": case.profile,
        "profile_options": dict(case.profile_options),
        "dtype": np.dtype(case.dtype).name,
        "groups": [
            {"hyperparameters": hp_out(g["hyperparameters"]), "params": list(g["params"])}
            for g in case.groups
        ],
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


def to_json(case: Case) -> str:
    """The case as JSON text (deterministic: the same case gives the same bytes)."""
    doc = _meta(case)
    doc["params0"] = [_flat_out(a) for a in case.params0]
    doc["grads"] = None if case.grads is None else [_flat_out(a) for a in case.grads]
    for part in ("expected", "tolerance"):
        src = getattr(case, part)
        doc[part] = {q: [_flat_out(a) for a in src[q]] for q in QUANTITIES}
    doc.update(_tail(case))
    # Metadata indented, each array on one line.
    lines = ["{"]
    items = list(doc.items())
    for n, (k, v) in enumerate(items):
        sep = "," if n < len(items) - 1 else ""
        if isinstance(v, dict) and k in ("expected", "tolerance"):
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


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(
        buf, np.array(a, order="C"), allow_pickle=False
    )  # (ascontiguousarray makes 0-d 1-d)
    return buf.getvalue()


def to_npz(case: Case) -> bytes:
    """The case as ``.npz`` bytes (deterministic, no pickles)."""
    meta = {**_meta(case), **_tail(case)}
    arrays = {"meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8)}
    for i, a in enumerate(case.params0):
        arrays[f"params0_{i}"] = a
    for i, a in enumerate(case.grads or []):
        arrays[f"grads_{i}"] = a
    for part in ("expected", "tolerance"):
        for q in QUANTITIES:
            for i, a in enumerate(getattr(case, part)[q]):
                arrays[f"{part}_{q}_{i}"] = a
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, _npy_bytes(a), compresslevel=9)
    return buf.getvalue()


def save(case: Case, path) -> Path:
    """Write ``case`` to ``path`` (``.json`` or ``.npz``), atomically."""
    path = Path(path)
    data = to_npz(case) if path.suffix == ".npz" else to_json(case).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
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
    get_profile(doc["profile"])
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
    groups = []
    for k, g in enumerate(doc["groups"]):
        hp = {
            key: (v if isinstance(v, bool) else _num_in(v, f"groups/{k}/hyperparameters/{key}"))
            for key, v in g["hyperparameters"].items()
        }
        groups.append({"hyperparameters": hp, "params": list(g["params"])})
    rules = []
    for k, r in enumerate(doc["rules"]):
        rule = {}
        for key, v in r.items():
            if key.endswith("dtype"):
                rule[key] = None if v is None else np.dtype(v)
            elif isinstance(v, bool):
                rule[key] = v
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
    )
