"""Kaniko's executor flags on ``lamina build``: every flag of Kaniko's flag table is accepted, and each one lamina
honours does what it does in Kaniko (checked on the pushed image with skopeo and umoci).

The table is Kaniko's own, from ``cmd/executor/cmd/root.go`` (GoogleContainerTools/kaniko at 236ba5690, the
archived release line): every ``RootCmd.PersistentFlags()`` flag, its aliases, and a value a Kaniko user would give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import inspect_config, inspect_raw, lamina_in_process, unpack, write_context
from tests.support.recording_proxy import RecordingProxy
from tests.support.registry import RunningRegistry

# (flag, value or None for a boolean given bare): Kaniko's flags in root.go order, deprecated spellings last
KANIKO_FLAGS: list[tuple[str, str | None]] = [
    ("--verbosity", "info"), ("--log-format", "text"), ("--log-timestamp", "true"), ("--force", None),
    ("--dockerfile", "{context}/app/Dockerfile"), ("--context", "{context}"), ("--context-sub-path", "app"),
    ("--destination", "{dest}"), ("--snapshot-mode", "redo"), ("--custom-platform", "linux/amd64"),
    ("--build-arg", "GREETING=hello"), ("--insecure", None), ("--skip-tls-verify", None),
    ("--insecure-pull", None), ("--skip-tls-verify-pull", None), ("--push-retry", "2"),
    ("--push-ignore-immutable-tag-errors", None), ("--image-fs-extract-retry", "1"),
    ("--image-download-retry", "2"), ("--kaniko-dir", "/kaniko"), ("--tar-path", "{out}/image.tar"),
    ("--single-snapshot", "false"), ("--reproducible", None), ("--target", "final"), ("--no-push", "false"),
    ("--no-push-cache", "false"), ("--cache-repo", "{cache}"), ("--cache-dir", "{out}/blobs"),
    ("--digest-file", "{out}/digest"), ("--image-name-with-digest-file", "{out}/names"),
    ("--image-name-tag-with-digest-file", "{out}/name-tags"), ("--oci-layout-path", "{out}/layout"),
    ("--compression", "gzip"), ("--compression-level", "6"), ("--cache", "true"),
    ("--compressed-caching", "false"), ("--cleanup", None), ("--cache-ttl", "6h"),
    ("--insecure-registry", "{registry}"), ("--skip-tls-verify-registry", "{registry}"),
    ("--registry-certificate", "{registry}=/etc/ssl/certs/ca-certificates.crt"),
    ("--registry-client-cert", "other.example={out}/client.pem,{out}/client.key"),
    ("--registry-map", "index.docker.io={registry};quay.io={registry}"), ("--registry-mirror", "{registry}"),
    ("--skip-default-registry-fallback", "false"), ("--ignore-var-run", "true"), ("--label", "org.example.a=1"),
    ("--skip-unused-stages", "true"), ("--use-new-run", None), ("--git", "branch=main,single-branch=false"),
    ("--cache-copy-layers", "true"), ("--cache-run-layers", "true"), ("--ignore-path", "/opt/ignored"),
    ("--force-build-metadata", "false"), ("--skip-push-permission-check", "false"),
    ("--snapshotMode", "full"), ("--customPlatform", "linux/amd64"), ("--tarPath", "{out}/image2.tar"),
    ("--whitelist-var-run", "true"),
]
# hidden in Kaniko (a GCS bucket as the context): refused until bucket contexts exist, see the README
NOT_FED = {"--bucket"}
NO_EFFECT = ("--snapshot-mode", "--kaniko-dir", "--compressed-caching", "--use-new-run", "--skip-unused-stages",
             "--force-build-metadata")

DOCKERFILE = """FROM {busybox} AS unused
RUN exit 1
FROM {busybox} AS final
ARG GREETING
RUN echo "$GREETING" > /greeting && mkdir -p /opt/ignored /var/run/app && echo x > /opt/ignored/x \\
 && echo pid > /var/run/app/pid
COPY hello.txt /hello.txt
"""


def test_every_kaniko_flag_is_accepted_and_the_build_works(lamina: Lamina, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write_context(root / "app", DOCKERFILE.format(busybox=lamina.images.busybox), {"hello.txt": "hi\n"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "client.pem").write_text("")  # for other.example only: never read
    (out / "client.key").write_text("")
    dest = lamina.dest("kaniko-flags")
    values = {"context": str(root), "dest": dest, "out": str(out), "registry": lamina.registry.host,
              "cache": dest.rsplit(":", 1)[0] + "/cache"}
    argv = []
    for flag, value in KANIKO_FLAGS:
        argv.append(flag if value is None else f"{flag}={value.format(**values)}")
    assert {flag for flag, _ in KANIKO_FLAGS} | NOT_FED >= set(kaniko_table_names())
    run = lamina_in_process(["build", *argv], lamina.environ({"SOURCE_DATE_EPOCH": "1700000000"})).check()
    for flag in NO_EFFECT:
        assert f"note: {flag} has no effect in lamina:" in run.stdout, flag
    digest = (out / "digest").read_text()
    assert f"pushed {dest}@{digest}" in run.stdout
    config = inspect_config(f"docker://{dest}")
    assert config["config"]["Labels"] == {"org.example.a": "1"}
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert (image.rootfs / "greeting").read_text() == "hello\n"  # context-sub-path: the Dockerfile and files of app/
    assert not (image.rootfs / "opt" / "ignored" / "x").exists()  # --ignore-path
    assert not (image.rootfs / "var" / "run" / "app").exists()  # --ignore-var-run
    assert (out / "image2.tar").exists() and not (out / "image.tar").exists()  # --tarPath came last


def kaniko_table_names() -> list[str]:
    """The flag names of KANIKO_FLAGS: kept next to the table so a flag missing from the feed shows up here."""
    return [flag for flag, _ in KANIKO_FLAGS]


def test_kaniko_boolean_spellings(lamina: Lamina, tmp_path: Path) -> None:
    """pflag's forms: --flag, --flag=true, --flag=false (KANIKO_NO_PUSH too)."""
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo a > /a\n")
    run = lamina.build(context, "--no-push=true", "--cache=false").check()
    assert "built sha256:" in run.stdout and "pushed" not in run.stdout
    run = lamina.build(context, extra_env={"KANIKO_NO_PUSH": "true"}).check()
    assert "pushed" not in run.stdout
    failed = lamina.build(context, "--no-push=false")
    assert failed.returncode == 2 and "no --destination given" in failed.stderr


def test_labels_context_sub_path_and_ignored_paths(lamina: Lamina, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write_context(root / "services" / "api", f"FROM {lamina.images.busybox}\nLABEL from=dockerfile keep=me\n"
                  "COPY f /f\nRUN mkdir -p /var/run/x /scratch && touch /var/run/x/sock /scratch/s /kept\n",
                  {"f": "f\n"})
    dest = lamina.dest("labels")
    lamina.build(root, "--context-sub-path", "services/api", "--destination", dest, "--label", "from=flag",
                 "--label", "org.opencontainers.image.version=1.2", "--ignore-path", "/scratch",
                 "--ignore-var-run").check()
    labels = inspect_config(f"docker://{dest}")["config"]["Labels"]
    assert labels == {"from": "flag", "keep": "me", "org.opencontainers.image.version": "1.2"}
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert (image.rootfs / "f").read_text() == "f\n" and (image.rootfs / "kept").exists()
    assert not (image.rootfs / "scratch" / "s").exists() and not (image.rootfs / "var" / "run" / "x").exists()
    # without the flags (lamina's default, as BuildKit) /var/run changes are image content
    plain = lamina.dest("labels-plain")
    lamina.build(root / "services" / "api", "--destination", plain).check()
    image = unpack(f"docker://{plain}", tmp_path / "unpacked-plain")
    assert (image.rootfs / "var" / "run" / "x" / "sock").exists() and (image.rootfs / "scratch" / "s").exists()


def test_context_sub_path_must_stay_inside(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\n")
    run = lamina.build(context, "--no-push", "--context-sub-path", "../elsewhere")
    assert run.returncode == 2 and "--context-sub-path ../elsewhere" in run.stderr


def test_single_snapshot_makes_one_layer(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo a > /a\nCOPY b /b\n"
                            "RUN rm /a && echo c > /c\nWORKDIR /w\n", {"b": "b\n"})
    base = json.loads(inspect_raw(f"docker://{lamina.images.busybox}"))
    every = lamina.dest("snapshots")
    single = lamina.dest("single")
    lamina.build(context, "--destination", every).check()
    lamina.build(context, "--destination", single, "--single-snapshot").check()
    assert len(json.loads(inspect_raw(f"docker://{every}"))["layers"]) == len(base["layers"]) + 4
    manifest = json.loads(inspect_raw(f"docker://{single}"))
    assert len(manifest["layers"]) == len(base["layers"]) + 1
    history = inspect_config(f"docker://{single}")["history"]
    assert sum(1 for entry in history if not entry.get("empty_layer")) == len(manifest["layers"])
    image = unpack(f"docker://{single}", tmp_path / "unpacked")
    assert not (image.rootfs / "a").exists()
    assert (image.rootfs / "b").read_text() == "b\n" and (image.rootfs / "c").read_text() == "c\n"
    assert (image.rootfs / "w").is_dir()


def test_log_format_json_and_timestamps(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo from-run\n")
    run = lamina.build(context, "--no-push", "--log-format", "json", "--snapshot-mode=redo").check()
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert all({"level", "msg", "time"} <= set(line) for line in lines)
    messages = [line["msg"] for line in lines]
    assert "from-run" in messages and any(m.startswith("built sha256:") for m in messages)
    assert any(m.startswith("note: --snapshot-mode has no effect") for m in messages)
    stamped = lamina.build(context, "--no-push", "--log-format=text", "--log-timestamp").check()
    step_lines = [line for line in stamped.stdout.splitlines() if "STEP" in line]
    assert step_lines and all(line[:4].isdigit() and line[10] == "T" for line in step_lines)
    assert "\x1b[" not in stamped.stdout
    bad = lamina.build(context, "--no-push", "--log-format", "xml")
    assert bad.returncode == 2 and "--log-format xml" in bad.stderr


@pytest.mark.parametrize("skip", [False, True])
def test_push_permission_is_checked_before_the_build(lamina: Lamina, auth_registry: RunningRegistry,
                                                     tmp_path: Path, skip: bool) -> None:
    host = auth_registry.host
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo ran-the-step\n")
    args = ["--destination", f"{host}/team/app:1", "--insecure-registry", host]
    if skip:
        args.append("--skip-push-permission-check")
    run = lamina.build(context, *args)
    assert run.returncode != 0
    assert ("ran-the-step" in run.stdout) is skip  # checked first: nothing was built
    if not skip:
        assert "needs credentials" in run.stderr and f"{host}/team/app" in run.stderr


def test_the_bucket_flag_is_refused_with_what_to_do(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\n")
    run = lamina.build(context, "--no-push", "--bucket", "my-bucket")
    assert run.returncode == 2 and "--bucket my-bucket: contexts in Google Cloud Storage" in run.stderr


def test_output_files_as_https_urls_are_put(lamina: Lamina, tmp_path: Path) -> None:
    """Kaniko writes --digest-file and the image-name files given as https:// URLs (pre-signed bucket URLs) with
    an HTTP PUT of text/plain."""
    import ssl

    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response

    from tests.support.tls_registry import TestCA

    ca = TestCA(tmp_path / "ca")
    leaf = ca.issue("put-server", hosts=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(leaf.cert_path), str(leaf.key_path))
    received: dict[str, tuple[str, str]] = {}

    def record(request: Request) -> Response:
        received[request.path] = (request.content_type or "", request.get_data(as_text=True))
        return Response("", status=200)

    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.expect_request("/digest", method="PUT").respond_with_handler(record)
    server.expect_request("/names", method="PUT").respond_with_handler(record)
    server.expect_request("/tags", method="PUT").respond_with_handler(record)
    server.start()
    try:
        base = f"https://127.0.0.1:{server.port}"
        build_context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo put > /p\n")
        dest = lamina.dest("put-files")
        lamina.build(build_context, "--destination", dest, "--digest-file", f"{base}/digest?X-Amz-Signature=abc",
                     "--image-name-with-digest-file", f"{base}/names", "--image-name-tag-with-digest-file",
                     f"{base}/tags", extra_env={"REQUESTS_CA_BUNDLE": str(ca.cert_path)}, subprocess=True).check()
        untrusted = lamina.build(build_context, "--no-push", "--digest-file", f"{base}/digest?X-Amz-Signature=abc",
                                 subprocess=True)
    finally:
        server.stop()
    assert untrusted.returncode != 0 and f"--digest-file: cannot PUT to {base}/digest" in untrusted.stderr
    assert "X-Amz-Signature" not in untrusted.stderr + untrusted.stdout
    content_type, digest = received["/digest"]
    assert content_type == "text/plain" and digest.startswith("sha256:")
    name = dest.rsplit(":", 1)[0]
    assert received["/names"][1] == f"{name}@{digest}\n" and received["/tags"][1] == f"{dest}@{digest}\n"


def test_immutable_tags_on_a_registry_that_enforces_them(lamina: Lamina, tmp_path: Path) -> None:
    """A registry with tag immutability (Harbor's 412 answer, played by the proxy): pushing over an existing tag
    fails and says why; with --push-ignore-immutable-tag-errors the push counts as done, the tag keeps its image,
    and the other destinations are still pushed."""
    with RecordingProxy(lamina.registry.host, immutable_tags=True) as proxy:
        repo = f"{proxy.host}/kaniko/immutable"
        first = write_context(tmp_path / "one", f"FROM {lamina.images.busybox}\nRUN echo one > /v.txt\n")
        second = write_context(tmp_path / "two", f"FROM {lamina.images.busybox}\nRUN echo two > /v.txt\n")
        lamina.build(first, "--destination", f"{repo}:1.0", insecure=[proxy.host]).check()
        kept = inspect_raw(f"docker://{repo}:1.0")
        refused = lamina.build(second, "--destination", f"{repo}:1.0", insecure=[proxy.host])
        assert refused.returncode == 1 and "immutable tags" in refused.stderr and "HTTP 412" in refused.stderr, \
            refused.describe()
        done = lamina.build(second, "--destination", f"{repo}:1.0", "--destination", f"{repo}:1.1",
                            "--push-ignore-immutable-tag-errors", insecure=[proxy.host]).check()
        assert "is an immutable tag that already exists; not moved" in done.stdout + done.stderr
        assert inspect_raw(f"docker://{repo}:1.0") == kept
        assert unpack(f"docker://{repo}:1.1", tmp_path / "new").read("v.txt") == "two\n"
