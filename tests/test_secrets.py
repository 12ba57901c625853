"""Credentials never appear in a message, a log line or a ``repr``, whatever the URL shape:
user:password inside the URL, tokens and signatures in its query string, secrets in
storage options. Every error path we can trigger is run and its text searched for the
secret; the S3 server is a real one (moto) on loopback."""

from __future__ import annotations

import logging

import pytest

from slipstream import SlipstreamDataset, SlipstreamLoader
from slipstream._redact import redact_url, scrub
from slipstream.cli import main
from slipstream.errors import SlipstreamError, UrlError
from slipstream.location import Location

SECRET = "sLiPsTrEaM-secret-5b1e"
SIGNATURE = "sLiPsTrEaM-signature-77aa"
TOKEN = "sLiPsTrEaM-token-0c3d"


def _leaks(text: str) -> list[str]:
    return [s for s in (SECRET, SIGNATURE, TOKEN) if s in text]


@pytest.mark.parametrize("url,shown", [
    (f"s3://AKIA:{SECRET}@bucket/data", "s3://***@bucket/data"),
    (f"https://user:{SECRET}@host:8443/d?X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token="
     f"{TOKEN}", "https://***@host:8443/d?X-Amz-Signature=***&X-Amz-Security-Token=***"),
    (f"gs://b/x?token={TOKEN}#frag", "gs://b/x?token=***#frag"),
    (f"see s3://k:{SECRET}@b/x and https://h/p?sig={SIGNATURE}",
     "see s3://***@b/x and https://h/p?sig=***"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_scrub_masks_option_values_nested_and_keeps_the_endpoint():
    options = {"key": "AKIAEXAMPLE", "secret": SECRET, "anon": False,
               "client_kwargs": {"aws_session_token": TOKEN,
                                 "endpoint_url": "http://127.0.0.1:9000"}}
    text = scrub(f"failed: key=AKIAEXAMPLE secret={SECRET} token={TOKEN} at "
                 f"http://127.0.0.1:9000", options)
    assert _leaks(text) == [] and "AKIAEXAMPLE" not in text
    assert "http://127.0.0.1:9000" in text


@pytest.mark.parametrize("url", [f"s3://AKIA:{SECRET}@bucket/data",
                                 f"s3://{SECRET}@bucket/data", f"hf://u:{SECRET}@datasets/x"])
def test_credentials_inside_a_bucket_url_are_refused_without_showing_them(url, capsys,
                                                                         tmp_path):
    with pytest.raises(UrlError, match="credentials inside a .* URL are not used") as err:
        SlipstreamDataset(url, cache_dir=tmp_path)
    assert _leaks(str(err.value)) == [] and _leaks(repr(err.value)) == []
    assert main(["build", url, "--cache-dir", str(tmp_path), "-q"]) == 2
    out = capsys.readouterr()
    assert _leaks(out.out + out.err) == [] and out.err.count("\n") == 1
    with pytest.raises(SlipstreamError) as err:  # hf:// serves no caches: another error
        SlipstreamLoader(tmp_path, remote_cache=url)
    assert _leaks(str(err.value)) == []


def test_a_query_string_token_is_masked_in_the_error(capsys, tmp_path):
    url = f"https://127.0.0.1:9/data?X-Amz-Signature={SIGNATURE}&token={TOKEN}"
    with pytest.raises(SlipstreamError) as err:
        SlipstreamDataset(url, cache_dir=tmp_path)
    assert _leaks(str(err.value)) == [] and "X-Amz-Signature=***" in str(err.value)
    assert main(["build", url, "--cache-dir", str(tmp_path), "-q"]) == 2
    out = capsys.readouterr()
    assert _leaks(out.out + out.err) == [] and "Traceback" not in out.err


def test_reprs_hold_no_credentials():
    location = Location.parse(f"memory://bucket/x?token={TOKEN}")
    assert _leaks(repr(location)) == [] and _leaks(location.describe()) == []


def test_storage_option_values_are_not_echoed_by_the_cli(capsys, tmp_path):
    assert main(["build", str(tmp_path), "--storage-option", SECRET, "-q"]) == 2
    assert main(["build", str(tmp_path), "--storage-option", f"secret={{{SECRET}", "-q"]) == 2
    out = capsys.readouterr()
    assert _leaks(out.out + out.err) == [] and out.err.count("\n") == 2


def test_s3_errors_and_logs_hold_no_secret(s3_server, s3_bucket, tmp_path, capsys, caplog):
    """A dataset and a cache store on a real S3 server with a secret in the options:
    a missing prefix, a wrong secret, a missing bucket; everything printed or logged is
    searched for it."""
    caplog.set_level(logging.DEBUG)
    options = {**s3_server.storage_options, "secret": SECRET}
    shown = []
    for url in (f"s3://{s3_bucket}/missing/", f"s3://no-such-bucket-{s3_bucket}/x/"):
        with pytest.raises(Exception) as err:  # noqa: B017 (any error: its text is checked)
            SlipstreamDataset(url, cache_dir=tmp_path, storage_options=options)
        shown += [str(err.value), repr(err.value)]
        cli_options = [f"--storage-option=key={options['key']}",
                       f"--storage-option=secret={SECRET}",
                       f"--storage-option=client_kwargs={{\"endpoint_url\": "
                       f"\"{s3_server.endpoint_url}\", \"region_name\": \"us-east-1\"}}"]
        main(["build", url, "--cache-dir", str(tmp_path), "-q", *cli_options])
        main(["ls-remote", url, *cli_options])
        out = capsys.readouterr()
        shown += [out.out, out.err]
    shown.append(caplog.text)
    for text in shown:
        assert _leaks(text) == [], text
