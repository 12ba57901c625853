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
