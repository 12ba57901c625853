"""ImageFolder and tar sources read from a real S3 server on loopback (moto)."""

from __future__ import annotations

import tarfile

from slipstream import SlipstreamDataset

from ..helpers import folder_expectation


def _upload(s3_server, bucket, root, prefix):
    client = s3_server.client()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(root).as_posix()}",
                              Body=p.read_bytes())


def test_imagefolder_from_s3(image_folder, s3_server, s3_bucket, cache_root):
    _upload(s3_server, s3_bucket, image_folder, "imagenet/train")
    ds = SlipstreamDataset(f"s3://{s3_bucket}/imagenet/train/", cache_dir=cache_root,
                           storage_options=s3_server.storage_options)
    assert ds.source.name == "imagefolder"
    cache = ds.build_cache(progress=False)
    expected = folder_expectation(image_folder)
    assert [cache[i]["path"] for i in range(len(cache))] == [e["path"] for e in expected]
    assert all(cache[i]["image"] == e["image"] for i, e in enumerate(expected))
    assert "testing-secret" not in str(cache.attrs)


def test_tar_gz_from_s3(image_folder, s3_server, s3_bucket, cache_root, tmp_path):
    archive = tmp_path / "train.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(image_folder, arcname="train")
    s3_server.client().put_object(Bucket=s3_bucket, Key="imagenet/train.tar.gz",
                                  Body=archive.read_bytes())
    ds = SlipstreamDataset(remote_dir=f"s3://{s3_bucket}/imagenet/train.tar.gz",
                           cache_dir=cache_root, storage_options=s3_server.storage_options)
    assert ds.source.name == "tar"
    cache = ds.build_cache(progress=False)
    expected = folder_expectation(image_folder)
    assert all(cache[i]["image"] == e["image"] for i, e in enumerate(expected))
