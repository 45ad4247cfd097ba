"""The Numba CUDA backend: the same bits as the NumPy reference, torch's
trajectories, device-resident state, clear errors, and no FMA in its kernel.

CI has no GPU: tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1, so these run on
Numba's CUDA simulator (tiny sizes; it is slow).  With a GPU, run them on it:
``NUMBA_ENABLE_CUDASIM=0 python -m pytest tests/test_backend_cuda.py``; the
tests marked for a real GPU then run too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba.cuda", reason="the cuda backend needs numba-cuda")

from numba import cuda  # noqa: E402
from torch_cases import CASES, has_grad, param_groups  # noqa: E402

import nadam_ref  # noqa: E402
from nadam_ref import NAdam, Parameter, backend_cuda, functional  # noqa: E402

SIMULATOR = backend_cuda.SIMULATOR
if not SIMULATOR and not cuda.is_available():
    pytest.skip(
        "NUMBA_ENABLE_CUDASIM=0 but no CUDA GPU: nothing to run the cuda backend on",
        allow_module_level=True,
    )
real_gpu = pytest.mark.skipif(SIMULATOR, reason="needs a real CUDA GPU (NUMBA_ENABLE_CUDASIM=0)")

SHAPES = [(3, 4), (5,), (), (2, 3), (0,)]  # several per group: 2-D, 1-D, 0-d, empty
STEPS = 3
OPTIONS = {
    "plain": {},
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "maximize": {"maximize": True, "weight_decay": 0.05},
}


def draw(rng, shape, dtype):
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return np.asarray(x).astype(dtype)


def problem(dtype, seed=0, shapes=SHAPES, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = [draw(rng, s, dtype) for s in shapes]
    grads = [[draw(rng, s, dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def run(backend, params0, grads, *, device_grads=False, **options):
    """θ, and the optimizer, after feeding ``grads`` to NAdam on ``backend``."""
    opt = NAdam([p.copy() for p in params0], lr=0.01, backend=backend, **options)
    params = opt.param_groups[0]["params"]
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = cuda.to_device(g) if device_grads else g
        opt.step()
    return [np.asarray(p.data) for p in params], opt


def assert_same_bits(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), f"max difference {np.max(np.abs(x - y), initial=0)}"


# -- the same bits as the NumPy reference --------------------------------------------------


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_bit_for_bit_with_numpy_backend(dtype, option):
    params0, grads = problem(dtype)
    expected, _ = run("numpy", params0, grads, **OPTIONS[option])
    got, opt = run("cuda", params0, grads, **OPTIONS[option])
    assert not np.array_equal(expected[0], params0[0])  # the step did something
    assert_same_bits(got, expected)
    for p in opt.param_groups[0]["params"]:
        assert backend_cuda.is_device_array(p.data)
        s = opt.state[p]
        assert backend_cuda.is_device_array(s["exp_avg"]) and backend_cuda.is_device_array(
            s["exp_avg_sq"]
        )


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_device_and_host_grads_give_the_same_bits(dtype):
    params0, grads = problem(dtype)
    expected, _ = run("numpy", params0, grads)
    on_device, _ = run("cuda", params0, grads, device_grads=True)
    assert_same_bits(on_device, expected)
    # host and device gradients mixed in one group
    opt = NAdam([p.copy() for p in params0], lr=0.01, backend="cuda")
    params = opt.param_groups[0]["params"]
    for step_grads in grads:
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = cuda.to_device(g) if i % 2 else g
        opt.step()
    assert_same_bits([np.asarray(p.data) for p in params], expected)


def test_several_groups_and_dtypes_in_one_step():
    rng = np.random.default_rng(1)
    arrays = [
        draw(rng, (4,), np.float32),
        draw(rng, (3,), np.complex64),
        draw(rng, (2, 2), np.float64),
    ]

    def groups(xs):
        return [
            {"params": xs[:2], "lr": 0.02},
            {"params": xs[2:], "lr": 0.005, "betas": (0.8, 0.99), "weight_decay": 0.01},
        ]

    ref = NAdam(groups([x.copy() for x in arrays]), backend="numpy")
    gpu = NAdam(groups([x.copy() for x in arrays]), backend="cuda")
    launches = []
    kernel = backend_cuda._kernel

    def counting(dtype):
        launches.append(np.dtype(dtype))
        return kernel(dtype)

    backend_cuda._kernel = counting
    try:
        for step in range(3):
            for opt in (ref, gpu):
                ps = [p for g in opt.param_groups for p in g["params"]]
                for i, p in enumerate(ps):
                    # the second parameter gets no gradient on step 1: no state, no update
                    p.grad = (
                        None
                        if (i == 1 and step == 1)
                        else draw(np.random.default_rng([step, i]), p.shape, p.dtype)
                    )
                opt.step()
    finally:
        backend_cuda._kernel = kernel
    # group 0 holds float32 and complex64 (float32 parts): one launch; group 1 one more
    assert launches == [np.dtype(np.float32), np.dtype(np.float64)] * 3
    ps_ref = [np.asarray(p.data) for g in ref.param_groups for p in g["params"]]
    ps_gpu = [np.asarray(p.data) for g in gpu.param_groups for p in g["params"]]
    assert_same_bits(ps_gpu, ps_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keras_order_and_float32_scalars_through_the_functional_core(dtype):
    """split_update=False with every scalar in float32, as Keras 3 computes."""
    params0, grads = problem(dtype, shapes=[(6,), (2, 2)])
    results = {}
    for backend in ("numpy", "cuda"):
        params = [p.copy() for p in params0]
        if backend == "cuda":
            params = [cuda.to_device(p) for p in params]
        ms = [backend_cuda.zeros_like(p) if backend == "cuda" else np.zeros_like(p) for p in params]
        vs = [backend_cuda.zeros_like(p) if backend == "cuda" else np.zeros_like(p) for p in params]
        steps, products = [0.0, 0.0], [1.0, 1.0]
        for g in grads:
            steps, products = nadam_ref.nadam(
                params,
                g,
                ms,
                vs,
                steps,
                products,
                lr=1e-3,
                beta1=0.9,
                beta2=0.999,
                eps=1e-7,
                momentum_decay=1.0,
                split_update=False,
                scalar_dtype=np.float32,
                compute_dtype=np.float32,
                backend=backend,
            )
        results[backend] = [np.asarray(p) for p in params] + [np.asarray(m) for m in ms]
    assert_same_bits(results["cuda"], results["numpy"])


# -- independent checks: a hand-derived first step, and torch's trajectories ---------------


def test_first_step_matches_the_formula_by_hand():
    """After one step from m = v = 0: v̂ = g², so θ1 = θ0 − γ·(μ2(1−β1)/(1−μ1μ2) + 1)·g/(|g| + ε)."""
    lr, b1, eps, psi = 0.01, 0.9, 1e-8, 4e-3
    theta0 = np.array([0.5, -1.0, 2.0, 0.0])
    g = np.array([0.3, -2.0, 1e-3, 5.0])
    opt = NAdam(
        [theta0.copy()], lr=lr, betas=(b1, 0.999), eps=eps, momentum_decay=psi, backend="cuda"
    )
    p = opt.param_groups[0]["params"][0]
    p.grad = g
    opt.step()
    mu1 = b1 * (1 - 0.5 * 0.96 ** (1 * psi))
    mu2 = b1 * (1 - 0.5 * 0.96 ** (2 * psi))
    expected = theta0 - lr * (mu2 * (1 - b1) / (1 - mu1 * mu2) + 1) * g / (np.abs(g) + eps)
    np.testing.assert_allclose(np.asarray(p.data), expected, rtol=1e-14, atol=1e-17)


TORCH_STEPS = 25
TORCH_TOLERANCE = {"float32": 2e-6, "float64": 1e-14}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_follows_recorded_torch(case, dtype):
    """The recorded torch.optim.NAdam runs (tests/data/torch), step by step, with
    torch's float32 step and ∏μ: groups, missing gradients, complex, decay, maximize."""
    import pathlib

    data = pathlib.Path(__file__).parent / "data" / "torch" / f"{case}.npz"
    n = sum(len(g["params"]) for g in CASES[case])
    with np.load(data, allow_pickle=False) as f:
        initial = [f[f"{dtype}/param{i}/initial"] for i in range(n)]
        grads = [f[f"{dtype}/param{i}/grads"][:TORCH_STEPS] for i in range(n)]
        theta = [f[f"{dtype}/param{i}/theta"][:TORCH_STEPS] for i in range(n)]
    opt = NAdam(
        param_groups(case, [np.array(x) for x in initial]), scalar_dtype=np.float32, backend="cuda"
    )
    params = [p for g in opt.param_groups for p in g["params"]]
    for t in range(TORCH_STEPS):
        for p, g in zip(params, grads):
            p.grad = np.array(g[t]) if has_grad(g[t]) else None
        opt.step()
        for i, p in enumerate(params):
            err = float(np.max(np.abs(np.asarray(p.data) - theta[i][t]), initial=0.0))
            assert err <= TORCH_TOLERANCE[dtype], f"param {i}, step {t + 1}: {err:.3g} from torch"


# -- where the arrays live -----------------------------------------------------------------


def test_device_parameters_are_updated_in_place_and_read_back_with_asarray():
    params0, grads = problem(np.float32, shapes=[(5,)])
    expected, _ = run("numpy", params0, grads)
    data = cuda.to_device(params0[0])
    p = Parameter(data)
    opt = NAdam([p], lr=0.01, backend="cuda")
    for g in grads:
        p.grad = g[0]
        opt.step()
    assert p.data is data  # used in place, not copied
    assert_same_bits([np.asarray(data), data.copy_to_host()], expected * 2)


def test_numpy_parameters_move_to_the_device_when_the_optimizer_takes_them():
    host = np.ones(3, np.float64)
    p = Parameter(host)
    opt = NAdam([p], backend="cuda")
    assert backend_cuda.is_device_array(p.data) and p.data is not host
    p.grad = np.ones(3)
    opt.step()
    assert np.all(host == 1.0)  # the host copy is left alone ...
    assert np.all(np.asarray(p.data) < 1.0)  # ... the device array holds the values


@pytest.mark.parametrize("dtype", ["float32", "complex64", "float64"])
def test_state_dict_moves_between_cpu_and_cuda(dtype):
    """Two steps on one backend, the state handed over, two more on the other:
    the same bits as four steps on the NumPy reference, both ways."""
    params0, grads = problem(dtype, steps=4)
    expected, _ = run("numpy", params0, grads)
    for first, second in (("numpy", "cuda"), ("cuda", "numpy")):
        _, opt = run(first, params0, grads[:2])
        state = opt.state_dict()
        for s in state["state"].values():
            assert type(s["exp_avg"]) is np.ndarray and type(s["exp_avg_sq"]) is np.ndarray
        theta = [np.asarray(p.data) for p in opt.param_groups[0]["params"]]
        nxt = NAdam([t.copy() for t in theta], lr=0.01, backend=second)
        nxt.load_state_dict(state)
        if second == "cuda":
            for s in nxt.state.values():
                assert backend_cuda.is_device_array(s["exp_avg"])
        params = nxt.param_groups[0]["params"]
        for step_grads in grads[2:]:
            for p, g in zip(params, step_grads):
                p.grad = g
            nxt.step()
        assert_same_bits([np.asarray(p.data) for p in params], expected)


# -- clear errors ----------------------------------------------------------------------------


def test_host_and_device_parameters_mixed_in_a_group_are_refused():
    with pytest.raises(TypeError, match=r"mixes host and device arrays: parameters \[1\] are host"):
        NAdam([cuda.to_device(np.ones(2)), np.ones(2)], backend="cuda")


@pytest.mark.parametrize("dtype", [np.float16, np.int32])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(TypeError, match="float32, float64"):
        NAdam([cuda.to_device(np.ones(2, dtype))], backend="cuda")


def test_non_contiguous_device_arrays_are_refused():
    strided = cuda.to_device(np.ones((4, 4), np.float32))[:, ::2]
    with pytest.raises(TypeError, match="C-contiguous"):
        NAdam([strided], backend="cuda")


def test_a_failed_step_changes_nothing():
    params0, _ = problem(np.float32, shapes=[(3,), (2,)])
    opt = NAdam([p.copy() for p in params0], backend="cuda")
    a, b = opt.param_groups[0]["params"]
    a.grad, b.grad = np.ones(3, np.float32), np.ones(3, np.float32)  # b's has the wrong shape
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    assert_same_bits([np.asarray(a.data), np.asarray(b.data)], params0)
    assert opt.state == {}


def test_check_finite_reads_device_arrays_and_changes_nothing():
    params0, _ = problem(np.float32, shapes=[(4,)])
    opt = NAdam([p.copy() for p in params0], backend="cuda", check_finite=True)
    (p,) = opt.param_groups[0]["params"]
    p.grad = cuda.to_device(np.array([0.0, 1.0, np.nan, 2.0], np.float32))
    with pytest.raises(functional.NonFiniteError, match=r"gradient of .* index \(2,\)"):
        opt.step()
    assert_same_bits([np.asarray(p.data)], params0)


def test_functional_core_refuses_host_parameters():
    with pytest.raises(
        TypeError, match="must be an array this backend updates in place, got ndarray"
    ):
        nadam_ref.nadam(
            [np.ones(2)],
            [np.ones(2)],
            [np.zeros(2)],
            [np.zeros(2)],
            [0.0],
            [1.0],
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            backend="cuda",
        )


def _python(code: str, simulator: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": simulator}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_gpu_or_simulator_the_error_says_how_to_enable_the_simulator():
    done = _python(
        """
        from numba import cuda
        if cuda.is_available():
            print("HAS-GPU")
            raise SystemExit
        import numpy as np, nadam_ref
        try:
            nadam_ref.NAdam([np.ones(2)], backend="cuda")
        except RuntimeError as e:
            print(e)
        """,
        simulator="0",
    )
    if "HAS-GPU" in done.stdout:
        pytest.skip("this machine has a CUDA GPU")
    assert "no usable CUDA GPU" in done.stdout and "NUMBA_ENABLE_CUDASIM=1" in done.stdout, (
        done.stderr[-2000:]
    )


# -- FMA contraction -----------------------------------------------------------------------


def test_kernel_ptx_has_no_fused_multiply_add():
    """The kernel compiles (for an H100, sm_90) to separately rounded IEEE operations,
    and, where nvJitLink can assemble it, without spilling registers to local memory.

    Needs libNVVM and NVRTC (the ``cuda`` extra), not a GPU.  NVVM's default would
    fuse; the PTX of the default compilation shows it."""
    done = _python(
        """
        import json
        from nadam_ref import backend_cuda as b
        try:  # the two libraries compile_ptx needs, looked for before compiling anything
            from numba.cuda.cudadrv import nvrtc, nvvm
            nvvm.NVVM()
            nvrtc.get_supported_ccs()
        except Exception as e:
            print("NO-NVVM", type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
            raise SystemExit
        try:  # nvJitLink assembles PTX to machine code without a GPU
            from cuda.bindings import nvjitlink
            from cuda.core import Linker, LinkerOptions, ObjectCode
            nvjitlink.version()
        except Exception:
            nvjitlink = None
        for dtype in ("float32", "float64"):
            ptx = b.kernel_ptx(dtype, cc=(9, 0))
            ops = {op: ptx.count(op) for op in ("mul.rn.", "add.rn.", "div.rn.", "sqrt.rn.", ".ftz")}
            log = None
            if nvjitlink is not None:
                linker = Linker(ObjectCode.from_ptx(ptx.encode(), name="kernel.ptx"),
                                options=LinkerOptions(arch="sm_90", verbose=True))
                linker.link("cubin")
                log = linker.get_info_log()
            print(json.dumps({"dtype": dtype, "fused": b.fma_instructions(ptx), "ops": ops, "log": log}))
        print(json.dumps({"default_fused": len(b.fma_instructions(b.kernel_ptx("float32", contract=True)))}))
        """,
        simulator="0",
    )
    if "NO-NVVM" in done.stdout:
        pytest.skip(
            "libNVVM or NVRTC not found (pip install nvidia-nvvm nvidia-cuda-nvrtc): "
            + done.stdout.strip()[:200]
        )
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(lines) == 3, done.stderr[-3000:]
    for line in lines[:2]:
        ops = line["ops"]
        assert line["fused"] == [], line
        assert ops["mul.rn."] and ops["add.rn."] and ops["div.rn."] and ops["sqrt.rn."], line
        assert ops[".ftz"] == 0, line
        if line["log"] is not None:
            # Assembled for sm_90: a thread's ILP elements stay in registers (no spills, no local memory).
            assert re.search(
                r"\b0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads", line["log"]
            ), line["log"]
    assert lines[2]["default_fused"] > 0  # without -fma=0 NVVM does fuse


def test_fma_instructions_finds_fused_lines():
    ptx = "\tmul.rn.f32 \t%f3, %f2, %f1;\n\tfma.rn.f32 \t%f4, %f2, %f1, %f3;\n\tmad.lo.s32 %r1, %r2, %r3, %r4;"
    assert backend_cuda.fma_instructions(ptx) == ["fma.rn.f32 \t%f4, %f2, %f1, %f3;"]


# -- a real GPU ----------------------------------------------------------------------------


@real_gpu
def test_launched_kernels_have_no_fma():
    for dtype in (np.float32, np.float64):
        kernel = backend_cuda._kernel(np.dtype(dtype))
        for overload in kernel.overloads.values():
            assert backend_cuda.fma_instructions(overload.library.get_asm_str()) == []


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_every_element_is_updated_once_at_the_tiling_edges(dtype):
    """Sizes on each side of the kernel's tiling: a thread's group of ILP
    elements (ILP·THREADS per block pass) and a block's chunk.  An element the
    kernel skipped, or updated twice, would not match the NumPy backend."""
    group, chunk = backend_cuda.ILP * backend_cuda.THREADS, backend_cuda.CHUNK
    sizes = sorted(
        {1, group - 1, group, group + 1, chunk - 1, chunk, chunk + 1, 2 * chunk + group + 1}
    )
    if np.dtype(dtype).kind == "c":  # the kernel sees 2n reals
        sizes = sorted({max(1, s // 2) for s in sizes} | {(chunk + 1) // 2})
    params0, grads = problem(dtype, shapes=[(s,) for s in sizes], steps=2)
    expected, _ = run("numpy", params0, grads)
    got, _ = run("cuda", params0, grads)
    for x, p0 in zip(expected, params0):
        assert np.all(x != p0)  # every element moved
    assert_same_bits(got, expected)


@real_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_bit_for_bit_at_gpu_sizes(dtype):
    shapes = [(100_003,), (257, 129)] + [(i * 37 + 1,) for i in range(60)]
    params0, grads = problem(dtype, shapes=shapes, steps=5)
    expected, _ = run("numpy", params0, grads, weight_decay=0.01)
    got, _ = run("cuda", params0, grads, device_grads=True, weight_decay=0.01)
    assert_same_bits(got, expected)


@real_gpu
@pytest.mark.parametrize("stream", ["default", "side"])
def test_torch_cuda_tensors_are_used_in_place(stream):
    """On torch's default stream the view is taken without a host synchronisation; on a
    stream of torch's own, Numba synchronises it first.  Either way the step reads the
    gradient torch just wrote."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    params0, grads = problem(np.float32, shapes=[(1_000_000,)])
    expected, _ = run("numpy", params0, grads)
    t = torch.tensor(params0[0], device="cuda")
    p = Parameter(t)
    opt = NAdam([p], lr=0.01, backend="cuda")
    side = torch.cuda.Stream() if stream == "side" else torch.cuda.current_stream()
    for g in grads:
        host = torch.tensor(g[0]).pin_memory()
        with torch.cuda.stream(side):
            # written by a copy and an (exact) multiplication still queued when step() runs
            p.grad = host.to("cuda", non_blocking=True) * 1.0
            opt.step()
    torch.cuda.synchronize()
    assert_same_bits([t.cpu().numpy()], expected)


# -- the GPU benchmark, run on the simulator -------------------------------------------------


def test_gpu_benchmark_runs_end_to_end_on_the_simulator(tmp_path):
    """No GPU is lent to every machine that runs this suite, so the script
    that measures one is run here on tiny cases: it must time every contender,
    replay the steps on the CPU and find the simulated GPU's bits identical,
    and write its JSON."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cuda.py"
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--simulate",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["simulated"] is True
    big, many = result["cases"]["big"], result["cases"]["many"]
    # The simulated cases: one tensor of 600 and twelve of 20 float32; 28 bytes each a step.
    assert (big["elements"], big["bytes_per_step"]) == (600, 600 * 28)
    assert (many["tensors"], many["elements"], many["bytes_per_step"]) == (12, 240, 240 * 28)
    for case in (big, many):
        assert case["steps"] == 3
        assert set(case["contenders"]) >= {"nadam_ref step", "nadam_ref update", "d2d copy"}
        assert case["targets"]["bit_identical_to_cpu_backend"] is True
    assert "bit-identical to the CPU backend" in done.stdout


def test_gpu_benchmark_without_a_gpu_says_so():
    if not SIMULATOR and cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cuda.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", os.devnull],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode == 0:
        pytest.skip("numba found a CUDA GPU in the subprocess")
    assert done.returncode == 2 and "nothing measured" in done.stderr, done.stderr[-2000:]


def test_host_work_benchmark_runs_without_a_gpu(tmp_path):
    """benchmarks/bench_cuda_host.py times the real backend's Python with the GPU calls
    stubbed; it must run every step's code path: one stubbed launch per step."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cuda_host.py"
    out = tmp_path / "host.json"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--params",
            "20",
            "--elements",
            "10",
            "--repeats",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["params"] == 20 and set(result["median_s"]) == {
        "cuda step (host)",
        "numba step (20 × 1 element)",
        "plan_step (cuda)",
    }
    # 2 warm-up rounds + 3 timed rounds, one launch each (all float32: one dtype, one launch).
    assert "launches stubbed: 5" in done.stdout
