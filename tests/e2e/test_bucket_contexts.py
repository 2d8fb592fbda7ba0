"""Build contexts in cloud buckets, through the vendors' own clients (the ``[s3]``, ``[gcs]`` and ``[azure]`` extras),
against their emulators on loopback: S3 as moto's server (Kaniko's ``S3_ENDPOINT`` and ``S3_FORCE_PATH_STYLE``), Google
Cloud Storage as gcp-storage-emulator (``STORAGE_EMULATOR_HOST``, which Google's client reads), Azure blob storage as
Azurite (npm; a shared key in ``AZURE_STORAGE_ACCESS_KEY``, as Kaniko). And each refused, with what to install,
where its client is missing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lamina.build.context_source import ContextSource, download_from_bucket
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import lamina_subprocess, unpack
from tests.support.registry import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
NODE = ROOT / ".ci" / "node" / "node_modules" / "node" / "bin"
# Azurite's well-known development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def context_archive(busybox: str, marker: str) -> bytes:
    """A tar.gz build context: a Dockerfile on busybox and one file, under ``app/`` (for --context-sub-path)."""
    files = {"app/Dockerfile": f"FROM {busybox}\nCOPY marker.txt /marker.txt\n", "app/marker.txt": marker}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_from(lamina: Lamina, context: str, env: dict[str, str], tmp_path: Path, name: str) -> str:
    dest = lamina.dest(name)
    run = lamina_subprocess(["build", "--context", context, "--context-sub-path", "app", "--destination", dest,
                             "--insecure-registry", lamina.registry.host], lamina.environ(env))
    assert run.returncode == 0, run.describe()
    return unpack(f"docker://{dest}", tmp_path / "image").read("marker.txt")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_context_through_kaniko_s_endpoint_variables(lamina: Lamina, s3: str, tmp_path: Path) -> None:
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "S3_ENDPOINT": s3, "S3_FORCE_PATH_STYLE": "true"}
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="contexts")
    client.put_object(Bucket="contexts", Key="team/ctx.tar.gz", Body=context_archive(lamina.images.busybox, "s3\n"))
    assert build_from(lamina, "s3://contexts/team/ctx.tar.gz", env, tmp_path, "s3ctx") == "s3\n"
    missing = lamina_subprocess(["build", "--context", "s3://contexts/none.tar.gz", "--no-push"],
                                lamina.environ(env))
    assert missing.returncode == 1 and "--context s3://contexts/none.tar.gz: the download failed" in missing.stderr
    assert "testing" not in missing.stderr.replace("s3://", "")  # the secret key is never printed


@pytest.fixture
def gcs() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_gcs_context_through_the_storage_emulator(lamina: Lamina, gcs: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
    client = storage.Client(project="test")
    bucket = client.create_bucket("contexts")
    bucket.blob("ctx.tar.gz").upload_from_string(context_archive(lamina.images.busybox, "gcs\n"))
    env = {"STORAGE_EMULATOR_HOST": gcs, "GOOGLE_CLOUD_PROJECT": "test"}
    assert build_from(lamina, "gs://contexts/ctx.tar.gz", env, tmp_path, "gsctx") == "gcs\n"


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[str]:
    if not AZURITE.exists():
        pytest.fail("azurite is not installed: .ci/run installs it (npm install --prefix .ci/node azurite)",
                    pytrace=False)
    port = free_port()
    env = {**os.environ, "PATH": f"{NODE}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    log = (tmp_path / "azurite.log").open("wb")
    process = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                                str(tmp_path / "azurite"), "--skipApiVersionCheck", "--loose"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"azurite did not start: {(tmp_path / 'azurite.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_azure_blob_context_with_a_shared_key(lamina: Lamina, azurite: str, tmp_path: Path) -> None:
    """Kaniko reads an Azure blob URL with the account's shared key from AZURE_STORAGE_ACCESS_KEY. Azurite answers
    an IP-style URL (the account in the path): lamina recognises only Azure's hosts as Azure contexts, so the
    download itself is driven here, through the same function a build calls."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(azurite, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY})
    service.create_container("contexts")
    service.get_blob_client("contexts", "ctx.tar.gz").upload_blob(context_archive(lamina.images.busybox, "az\n"))
    url = f"{azurite}/contexts/ctx.tar.gz"
    dest = tmp_path / "ctx.tar.gz"
    download_from_bucket(ContextSource("azure", url), dest, {"AZURE_STORAGE_ACCESS_KEY": AZURITE_KEY})
    with tarfile.open(dest) as archive:
        assert archive.extractfile("app/marker.txt").read() == b"az\n"  # type: ignore[union-attr]
    from lamina.errors import ContextError
    with pytest.raises(ContextError, match="the download failed"):  # a wrong key is refused by the server
        download_from_bucket(ContextSource("azure", url), tmp_path / "x", {"AZURE_STORAGE_ACCESS_KEY": "d3Jvbmc="})


@pytest.mark.parametrize("context, package", [("gs://bucket/ctx.tar.gz", "google.cloud.storage"),
                                              ("s3://bucket/ctx.tar.gz", "boto3"),
                                              ("https://acct.blob.core.windows.net/c/ctx.tar.gz",
                                               "azure.storage.blob")])
def test_bucket_contexts_need_their_extra(lamina: Lamina, context: str, package: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # as in lamina's image, which has none of the extras
    run = lamina.build(tmp_path, "--context", context, "--no-push")
    assert run.returncode == 2 and f"need the {package} package: pip install 'lamina[" in run.stderr
