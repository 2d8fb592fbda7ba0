"""Attestations attached the way BuildKit attaches them (issue 16): SLSA provenance by default (``mode=min``), in an
attestation manifest next to the image manifest in an index; read back with skopeo, checked against the OCI
schemas, the statements parsed and validated by in-toto's own Python bindings (``in-toto-attestation``, with its
SLSA v1 provenance message); ``mode=max``, SLSA v0.2, secrets never recorded, the CI run recorded as BuildKit does
from the GitHub and GitLab environments, the OCI layout and metadata outputs, and ``--provenance=false``."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, inspect_raw, schema_errors, skopeo, write_context

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
EPOCH = "1700000000"


def attested(lamina: Lamina, context: Path, *args: str, env: dict[str, str] | None = None,
             dest: str | None = None) -> tuple[str, LaminaRun]:
    """Build and push with attestations on (the tests' environment turns them off by default)."""
    dest = dest or lamina.dest("attest")
    run = lamina.build(context, "--destination", dest, *args,
                       extra_env={"LAMINA_PROVENANCE": "", **(env or {})}).check()
    return dest, run


def read_index(dest: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The index at ``dest``, its image entry and its attestation entry."""
    index = json.loads(inspect_raw(f"docker://{dest}"))
    assert index["mediaType"] == OCI_INDEX and len(index["manifests"]) == 2, index
    image, attestation = index["manifests"]
    return index, image, attestation


def statements(lamina: Lamina, dest: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """predicate type → in-toto statement, read from the attestation manifest's layers (copied out with skopeo)."""
    _, _, attestation = read_index(dest)
    repository = dest.rsplit(":", 1)[0]
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "attestation"
    skopeo("copy", "--src-tls-verify=false", f"docker://{repository}@{attestation['digest']}", f"dir:{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for layer in manifest["layers"]:
        data = json.loads((out / layer["digest"].removeprefix("sha256:")).read_text())
        assert layer["annotations"]["in-toto.io/predicate-type"] == data["predicateType"]
        found[data["predicateType"]] = data
    return found


def validate_statement(data: dict[str, Any]) -> None:
    """in-toto's own bindings: the Statement v1 (subjects, digests, predicate type) and, for SLSA v1, the
    predicate as its Provenance message (the known fields' names and types)."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    parsed = json_format.ParseDict(data, statement_pb2.Statement())
    Statement.copy_from_pb(parsed).validate()
    if data["predicateType"] == SLSA_V1:  # SLSA allows extension fields (buildkit_*, lamina_metadata): not checked
        json_format.ParseDict(data["predicate"], provenance_pb2.Provenance(),
                              ignore_unknown_fields=True)


def test_default_provenance_is_attached_as_buildkit_does(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nARG TOKEN\nARG GREETING=hi\n"
                            "RUN echo $GREETING > /g.txt\nLABEL org.example.a=1\n")
    dest, run = attested(lamina, context, "--build-arg", "GREETING=hello", "--build-arg", "TOKEN=s3cr3t-value",
                         "--metadata-file", str(tmp_path / "meta.json"))
    index, image, attestation = read_index(dest)
    assert schema_errors(index, OCI_INDEX) == []
    assert image["platform"]["os"] == "linux" and image["mediaType"] == OCI_MANIFEST
    assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert attestation["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                          "vnd.docker.reference.type": "attestation-manifest"}
    manifest = json.loads(inspect_raw(f"docker://{dest.rsplit(':', 1)[0]}@{attestation['digest']}"))
    assert schema_errors(manifest, OCI_MANIFEST) == []
    assert manifest["artifactType"] == "application/vnd.docker.attestation.manifest.v1+json"
    assert manifest["subject"]["digest"] == image["digest"]
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert base64.b64decode(manifest["config"]["data"]) == b"{}"
    # skopeo resolves the tag to the image of this platform, as a runtime does; the tag's digest is the index's
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}").stdout)
    pushed = json.loads((tmp_path / "meta.json").read_text())["containerimage.digest"]
    assert inspected["Digest"] == pushed and f"pushed {dest}@{pushed}" in run.stdout
    image_manifest = json.loads(inspect_raw(f"docker://{dest.rsplit(':', 1)[0]}@{image['digest']}"))
    assert inspected["Layers"] == [layer["digest"] for layer in image_manifest["layers"]]

    found = statements(lamina, dest, tmp_path)
    assert list(found) == [SLSA_V1]
    provenance = found[SLSA_V1]
    validate_statement(provenance)
    assert provenance["_type"] == "https://in-toto.io/Statement/v1"
    assert provenance["subject"][0]["digest"] == {"sha256": image["digest"].removeprefix("sha256:")}
    subject = PackageURL.from_string(provenance["subject"][0]["name"])
    assert (subject.type, subject.namespace, subject.version) == ("docker", dest.rsplit("/", 1)[0], "1")
    assert subject.qualifiers == {"platform": f"linux/{image['platform']['architecture']}"}
    predicate = provenance["predicate"]
    definition = predicate["buildDefinition"]
    assert definition["buildType"] == "https://github.com/moby/buildkit/blob/master/docs/attestations/" \
                                      "slsa-definitions.md"
    assert definition["externalParameters"]["configSource"] == {"path": "Dockerfile"}
    request = definition["externalParameters"]["request"]
    assert request["frontend"] == "dockerfile.v0" and "args" not in request  # min: no build args, no labels
    base = skopeo("inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                  f"docker://{lamina.images.busybox}").stdout.strip()
    dependencies = definition["resolvedDependencies"]
    assert [d["digest"] for d in dependencies] == [{"sha256": base.removeprefix("sha256:")}]
    material = PackageURL.from_string(dependencies[0]["uri"])
    assert (material.namespace, material.name, material.version) == (
        f"{lamina.images.busybox.split('/', 1)[0]}/library", "busybox", "latest")
    metadata = predicate["runDetails"]["metadata"]
    assert metadata["startedOn"] <= metadata["finishedOn"] and metadata["invocationId"]
    assert "s3cr3t-value" not in json.dumps(provenance)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["containerimage.descriptor"]["mediaType"] == OCI_INDEX
    assert meta["containerimage.digest"].startswith("sha256:") and meta["containerimage.digest"] != image["digest"]
    assert meta["lamina.image.manifest.digest"] == image["digest"]
    assert [s["predicateType"] for s in meta["lamina.attestations"]["statements"]] == [SLSA_V1]


def test_max_mode_records_args_dockerfile_steps_and_never_secrets(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.busybox}
        ARG GREETING
        ARG API_TOKEN
        ARG PLAIN
        RUN --mount=type=secret,id=npmrc echo $GREETING > /g.txt
        COPY data.txt /data.txt
    """, {"data.txt": "d\n"})
    (tmp_path / "npmrc").write_text("registry-token=abc\n")
    dest, _ = attested(lamina, context, "--provenance", "mode=max", "--build-arg", "GREETING=hello",
                       "--build-arg", "API_TOKEN=tok-123456", "--build-arg", "PLAIN=the-secret-value",
                       "--secret", f"id=npmrc,src={tmp_path / 'npmrc'}", "--secret", "id=pw,env=MY_PASSWORD",
                       "--label", "org.example.team=core", env={"MY_PASSWORD": "the-secret-value"})
    provenance = statements(lamina, dest, tmp_path)[SLSA_V1]
    validate_statement(provenance)
    text = json.dumps(provenance)
    assert "tok-123456" not in text and "the-secret-value" not in text and "registry-token" not in text
    request = provenance["predicate"]["buildDefinition"]["externalParameters"]["request"]
    assert request["args"] == {"build-arg:GREETING": "hello", "label:org.example.team": "core"}
    assert request["secrets"] == [{"id": "npmrc"}]
    internal = provenance["predicate"]["buildDefinition"]["internalParameters"]
    assert "ARG GREETING" in internal["dockerfile"]
    assert [step["instruction"] for step in internal["buildConfig"]["steps"]][-1] == "COPY data.txt /data.txt"
    lamina_meta = provenance["predicate"]["runDetails"]["metadata"]["lamina_metadata"]
    assert lamina_meta["redacted_build_args"] == ["API_TOKEN", "PLAIN"]


GITHUB_ENV = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r",
              "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_SHA": "a" * 40, "GITHUB_REF": "refs/heads/main",
              "GITHUB_WORKFLOW": "build", "GITHUB_JOB": "image", "GITHUB_EVENT_NAME": "push"}
GITLAB_ENV = {"GITLAB_CI": "true", "CI_JOB_URL": "https://gitlab.example/g/p/-/jobs/7", "CI_JOB_ID": "7",
              "CI_PIPELINE_ID": "3", "CI_PROJECT_URL": "https://gitlab.example/g/p", "CI_COMMIT_SHA": "b" * 40,
              "CI_COMMIT_REF_NAME": "main", "CI_PROJECT_PATH": "g/p", "CI_JOB_NAME": "build"}


@pytest.mark.parametrize("env, builder, source", [
    (GITHUB_ENV, "https://github.com/o/r/actions/runs/42/attempts/2", "https://github.com/o/r"),
    (GITLAB_ENV, "https://gitlab.example/g/p/-/jobs/7", "https://gitlab.example/g/p"),
])
def test_the_ci_run_is_recorded(lamina: Lamina, tmp_path: Path, env: dict[str, str], builder: str,
                                source: str) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN true\n")
    dest, _ = attested(lamina, context, env=env)
    provenance = statements(lamina, dest, tmp_path)[SLSA_V1]["predicate"]
    assert provenance["runDetails"]["builder"]["id"] == builder
    metadata = provenance["runDetails"]["metadata"]
    assert metadata["buildkit_metadata"]["vcs"]["source"] == source
    assert metadata["lamina_metadata"]["ci"]["commit"] in ("a" * 40, "b" * 40)


def test_slsa_v02_and_a_git_checkout_context(lamina: Lamina, tmp_path: Path) -> None:
    from tests.support.http_files import git

    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nCOPY f /f\n", {"f": "f\n"})
    git("init", "-q", "-b", "main", cwd=context)
    git("remote", "add", "origin", "https://user:pw@git.example/team/app.git", cwd=context)
    git("add", "-A", cwd=context)
    git("commit", "-q", "-m", "c", cwd=context)
    commit = git("rev-parse", "HEAD", cwd=context).strip()
    dest, _ = attested(lamina, context, "--provenance", "mode=min,version=v0.2")
    provenance = statements(lamina, dest, tmp_path)[SLSA_V02]
    validate_statement(provenance)
    predicate = provenance["predicate"]
    assert predicate["buildType"] == "https://mobyproject.org/buildkit@v1"
    assert predicate["invocation"]["configSource"]["entryPoint"] == "Dockerfile"
    assert predicate["materials"][0] == {"uri": "https://git.example/team/app.git", "digest": {"sha1": commit}}
    assert predicate["materials"][1]["uri"].startswith("pkg:docker/")
    vcs = predicate["metadata"]["https://mobyproject.org/buildkit@v1#metadata"]["vcs"]
    assert vcs == {"source": "https://git.example/team/app.git", "revision": commit}  # no credentials


def test_reproducible_attestations_and_layout_output(lamina: Lamina, tmp_path: Path) -> None:
    """With SOURCE_DATE_EPOCH the attestations, and so the index, are the same for the same inputs; the OCI layout
    holds the index with the attestation manifest (umoci and skopeo read it)."""
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo r > /r\n")
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    first, one = attested(lamina, context, "--oci-layout-path", str(tmp_path / "layout"), env=env)
    index_one = read_index(first)[0]
    second, two = attested(lamina, context, env=env, dest=first)  # the subject names the destination: the same
    assert one.stdout.split("built ")[1].split()[0] == two.stdout.split("built ")[1].split()[0]
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    entry = index["manifests"][0]
    assert entry["mediaType"] == OCI_INDEX
    inner = json.loads((tmp_path / "layout" / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    assert [m["platform"]["os"] for m in inner["manifests"]] == ["linux", "unknown"]
    assert read_index(second)[0] == index_one
    skopeo("inspect", f"oci:{tmp_path / 'layout'}:{first.rsplit(':', 1)[1]}")  # skopeo picks the image


def test_oci_archive_output_carries_the_attestations(lamina: Lamina, tmp_path: Path) -> None:
    import tarfile

    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\nRUN echo a > /a\n")
    archive = tmp_path / "out" / "image.tar"
    lamina.build(context, "--no-push", "--oci-tar-path", str(archive), "--tar-path", str(tmp_path / "docker.tar"),
                 extra_env={"LAMINA_PROVENANCE": "mode=max"}).check()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        entry = index["manifests"][0]
        inner = json.loads(tar.extractfile(f"blobs/sha256/{entry['digest'][7:]}").read())  # type: ignore[union-attr]
    assert names[:2] == ["oci-layout", "index.json"] and entry["mediaType"] == OCI_INDEX
    assert [m["platform"]["os"] for m in inner["manifests"]] == ["linux", "unknown"]
    assert all(f"blobs/sha256/{m['digest'][7:]}" in names for m in inner["manifests"])
    inspected = json.loads(skopeo("inspect", f"oci-archive:{archive}:latest").stdout)
    assert inspected["Digest"] == entry["digest"]
    assert not list((tmp_path / "out").glob(".*")), "the staging layout was left behind"
    # the docker archive holds the image alone: docker load and skopeo read it as before
    skopeo("inspect", f"docker-archive:{tmp_path / 'docker.tar'}")


def test_provenance_false_pushes_the_image_manifest(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", f"FROM {lamina.images.busybox}\n")
    dest, _ = attested(lamina, context, "--provenance=false")
    assert json.loads(inspect_raw(f"docker://{dest}"))["mediaType"] == OCI_MANIFEST
    bad = lamina.build(context, "--provenance", "mode=everything", "--no-push", extra_env={"LAMINA_PROVENANCE": ""})
    assert bad.returncode == 2 and "--provenance" in bad.stderr
    # nothing would carry them (a docker archive cannot): none are made, the digest is the image manifest's
    meta = tmp_path / "meta.json"
    lamina.build(context, "--no-push", "--tar-path", str(tmp_path / "image.tar"), "--sbom", "--metadata-file",
                 str(meta), extra_env={"LAMINA_PROVENANCE": ""}).check()
    written = json.loads(meta.read_text())
    assert "lamina.attestations" not in written and written["containerimage.descriptor"]["mediaType"] == OCI_MANIFEST


def test_manifest_create_keeps_each_platform_s_attestations(lamina: Lamina, tmp_path: Path) -> None:
    from tests.e2e.helpers import lamina_in_process

    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY hello.txt /hello.txt\n", {"hello.txt": "hi\n"})
    dest = lamina.dest("multi-attest", "1.0")
    repository = dest.rsplit(":", 1)[0]
    pushed = {}
    for platform in ("linux/amd64", "linux/arm64"):  # as the release workflow: by digest, each an index
        digest_file = tmp_path / f"digest-{platform.replace('/', '-')}"
        lamina.build(context, "--platform", platform, "--destination", f"{lamina.registry.host}/per/{platform}",
                     "--push-by-digest", "--digest-file", str(digest_file),
                     extra_env={"LAMINA_PROVENANCE": ""}).check()
        pushed[platform] = f"{lamina.registry.host}/per/{platform}@{digest_file.read_text()}"
    lamina_in_process(["manifest", "create", "--destination", dest, "--insecure-registry", lamina.registry.host,
                       *pushed.values()], lamina.environ()).check()
    index = json.loads(inspect_raw(f"docker://{dest}"))
    assert schema_errors(index, OCI_INDEX) == []
    platforms = [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]]
    assert platforms == ["linux/amd64", "linux/arm64", "unknown/unknown", "unknown/unknown"]
    images, attestations = index["manifests"][:2], index["manifests"][2:]
    assert [a["annotations"]["vnd.docker.reference.digest"] for a in attestations] == [i["digest"] for i in images]
    for attestation in attestations:  # copied into the destination repository, with their blobs
        manifest = json.loads(inspect_raw(f"docker://{repository}@{attestation['digest']}"))
        skopeo("copy", "--src-tls-verify=false", f"docker://{repository}@{attestation['digest']}",
               f"dir:{tmp_path / attestation['digest'][7:19]}")
        assert manifest["layers"][0]["annotations"]["in-toto.io/predicate-type"] == SLSA_V1


def test_materials_of_add_and_of_a_git_checkout_context(lamina: Lamina, tmp_path: Path) -> None:
    """ADD of a URL is recorded with the sha256 of what was downloaded (credentials and query never), ADD of a git
    repository with its commit, and a context that is a git checkout with its remote and commit."""
    import hashlib

    from tests.support.http_files import git, publish_bare, serve_directory

    www = tmp_path / "www"
    www.mkdir()
    (www / "data.bin").write_bytes(b"downloaded bytes\n")
    work = write_context(tmp_path / "repo", "", {"inside.txt": "from git\n"})
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "r", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work).strip()
    publish_bare(work, www)
    with serve_directory(www) as url:
        context = write_context(tmp_path / "ctx", f"""
            FROM {lamina.images.busybox}
            ADD {url.replace('http://', 'http://user:pw@')}/data.bin?token=abc /data.bin
            ADD {url}/repo.git#main /repo/
        """)
        git("init", "-q", "-b", "main", cwd=context)
        git("remote", "add", "origin", "https://git.example/team/app.git", cwd=context)
        git("add", "-A", cwd=context)
        git("commit", "-q", "-m", "c", cwd=context)
        checkout = git("rev-parse", "HEAD", cwd=context).strip()
        cache = ("--cache", "--cache-repo", f"{lamina.registry.host}/attest/materials-cache")
        attested(lamina, context, *cache)
        # again, with the cache: an ADD of a URL or repository without --checksum is never a cache hit (its
        # content is only known once fetched), so the digests are those of this build's downloads
        dest, _ = attested(lamina, context, *cache)
        provenance = statements(lamina, dest, tmp_path)[SLSA_V1]["predicate"]
    dependencies = {d["uri"]: d.get("digest") for d in provenance["buildDefinition"]["resolvedDependencies"]}
    assert dependencies[f"{url}/data.bin"] == {"sha256": hashlib.sha256(b"downloaded bytes\n").hexdigest()}
    assert dependencies[f"{url}/repo.git#main"] == {"sha1": commit}
    assert dependencies["https://git.example/team/app.git"] == {"sha1": checkout}
    assert "pw" not in json.dumps(provenance) and "token=abc" not in json.dumps(provenance)
