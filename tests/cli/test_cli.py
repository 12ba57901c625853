"""The CLI end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from slipstream.cli import main as cli_main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "slipstream.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_build_info_verify(image_folder, cache_root):
    r = run_cli("build", str(image_folder), "--cache-dir", str(cache_root), "-q")
    assert r.returncode == 0, r.stderr
    path = r.stdout.split()[0]
    assert "18 samples" in r.stdout
    r = run_cli("info", path)
    assert r.returncode == 0, r.stderr
    for text in ("samples      18", "image (image), label (int), path (str)", "jpeg: 18",
                 "imagefolder"):
        assert text in r.stdout
    key = os.path.basename(path)
    r = run_cli("info", key[:8], "--json", "--cache-dir", str(cache_root))
    assert json.loads(r.stdout)["key"] == key
    r = run_cli("verify", path, "-q")
    assert r.returncode == 0 and r.stdout.startswith("OK:")
    r = run_cli("ls", "--cache-dir", str(cache_root))
    assert key in r.stdout


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert cli_main(["build", str(tmp_path / "missing"), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slipstream build: error:") and "missing" in err
    assert cli_main(["info", "deadbeef", "--cache-dir", str(tmp_path)]) == 2


# -- arguments that used to end in a traceback (issue 17, item 9) -------------------------------
def test_bad_arguments_are_one_line_each(tmp_path, image_folder):
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["build", str(image_folder), "--storage-option", "client_kwargs={\"a\": 1"],
         "--storage-option client_kwargs=...: the value starts like JSON but is not valid"),
        (["build", str(image_folder), "--storage-option", "no-equals-sign"],
         "--storage-option expects KEY=VALUE; the 1st one has no KEY="),
        (["build", "foo://bucket/data"], "unknown protocol 'foo'"),
        (["build", str(image_folder), "--max-pixels", "0"], "--max-pixels: max_pixels=0"),
        (["build", str(image_folder), "--threads", "0"], "--threads must be positive"),
        (["demo", "--dir", str(tmp_path / "a-file")], "a-file is a file, not a directory"),
        (["demo", "--dir", str(tmp_path / "a-file" / "below")], "a-file is a file"),
        (["demo", "--dir", str(tmp_path / "d"), "--images", "0"], "--images must be positive"),
    ]
    for args, message in cases:
        r = run_cli(*args, "--cache-dir", str(tmp_path / "c")) if args[0] == "build" else \
            run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_storage_option_values(tmp_path):
    from slipstream.cli import _storage_options

    assert _storage_options(["endpoint_url=127.0.0.1:9000", "anon=true", "n=3", "x=007",
                             "kw={\"a\": [1]}", "s=plain"]) == {
        "endpoint_url": "127.0.0.1:9000", "anon": True, "n": 3, "x": "007",
        "kw": {"a": [1]}, "s": "plain"}


def test_build_on_error_skip_and_max_pixels_from_the_command_line(tmp_path):
    import shutil

    from ..hostile import HOSTILE_DIR

    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    for name in ("baseline_48x40.jpg", "bilevel_9000x9000.png"):
        shutil.copy(HOSTILE_DIR / name, root / name)
    args = ["build", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "c"), "-q"]
    r = run_cli(*args)
    assert r.returncode == 2 and "bilevel_9000x9000.png" in r.stderr
    r = run_cli(*args, "--on-error", "skip")
    assert r.returncode == 0 and "1 samples" in r.stdout and "1 left out" in r.stdout
    assert "bilevel_9000x9000.png" in r.stderr  # the warning names it
    r = run_cli(*args, "--max-pixels", "81000000")
    assert r.returncode == 0 and "2 samples" in r.stdout, r.stderr
