"""Hostile input never reaches outside the rootfs or the context, and secrets never reach the image (issue 7).

Layers: every tar of ``tests/support/hostile.py``'s corpus is pushed as the top layer of a busybox image, then
``FROM <it>`` + ``RUN`` is built. A canary tree outside every rootfs (``/tmp/lamina-canary-*``, which the tars aim
at) and a few host paths named by the tars are recorded before and after: nothing may change. The build either
succeeds with the hostile entry neutralised (checked inside the image by the RUN) or fails with one clear
``error:`` line naming the entry; never a traceback.

Contexts: symlinks out of the context are copied as links by ``COPY .``; a top-level source symlink is resolved
inside the context (decoys sit where the links land); ``COPY --from`` follows symlinks inside the source stage.

Secrets: a ``--secret`` value and the registry password (and their base64 forms) appear nowhere: not in the layers,
config, history, cache entries, debug output, nor the environment of a later RUN.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from lamina.rootfs.unpack import unpack_layer
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LAMINA_TIMEOUT, LaminaRun, write_context
from tests.support import baseimages
from tests.support.baseimages import AuthBaseImages
from tests.support.hostile import (
    CANARY_SECRET,
    DECOY,
    BaseLayers,
    Canary,
    Change,
    ImagePusher,
    LayerCase,
    TransientWatcher,
    decompressed,
    diff_states,
    dir_then_link_context,
    hostile_context,
    layer_corpus,
    layer_files,
    pool_race_entries,
    tar_bytes,
)
from tests.support.registry import RunningRegistry

pytestmark = pytest.mark.e2e

REPOSITORY = "hostile/layers"
LAYER_NAMED = re.compile(r"\blayer \d+ of stage \S+ \(sha256:[0-9a-f]{64}\)")


@dataclass
class Outcome:
    case: str
    kind: str  # "layer", "context", "add", "secret"
    result: str  # "neutralised", "clear error", "FAILED"
    changes: list[Change]
    note: str = ""


RESULTS: list[Outcome] = []


@dataclass(frozen=True)
class Corpus:
    canary: Canary
    cases: dict[str, LayerCase]
    images: dict[str, str]  # case name -> image reference


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    made = Canary.create()
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def busybox_layers(base_layouts: dict[str, Path]) -> BaseLayers:
    return BaseLayers.from_layout(base_layouts[baseimages.BUSYBOX], "latest")


@pytest.fixture(scope="module")
def corpus(canary: Canary, registry: RunningRegistry, busybox_layers: BaseLayers) -> Corpus:
    cases = layer_corpus(canary)
    pusher = ImagePusher(registry.host, busybox_layers)
    images = {}
    for case in cases:
        pusher.push(REPOSITORY, case.name, case.blob, case.media_type, case.diff_id)
        images[case.name] = f"{registry.host}/{REPOSITORY}:{case.name}"
    return Corpus(canary, {c.name: c for c in cases}, images)


def watched_build(lamina: Lamina, canary: Canary, tmp_path: Path, dockerfile: str,
                  files: dict[str, str | bytes] | None = None, *args: str, context: Path | None = None,
                  in_subprocess: bool = False) -> tuple[LaminaRun, list[Change]]:
    """Build (no push) with the work dir under ``tmp_path``; return the run and what changed in the canary."""
    if context is None:
        context = write_context(tmp_path / "context", dockerfile, files)
    canary.reset()
    before = canary.state()
    with TransientWatcher(canary) as watcher:
        run = lamina.build(context, "--no-push", "--work-dir", str(tmp_path / "work"), *args, subprocess=in_subprocess)
    after = canary.state()
    return run, diff_states(before, after) + watcher.transient(after)


def describe_changes(changes: list[Change]) -> str:
    return "\n".join(f"  {c.what} {c.path}: {c.detail}" for c in changes)


def assert_clear_error(run: LaminaRun, mentions: tuple[str, ...] = ()) -> str:
    assert run.returncode != 0, run.describe()
    assert "Traceback" not in run.output, run.describe()
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line:\n{run.describe()}"
    for text in mentions:
        assert text in errors[0], f"{text!r} not named by the error:\n{errors[0]}"
    return errors[0]


def record(outcome: Outcome) -> None:
    RESULTS.append(outcome)


# ---------------------------------------------------------------------------------------------------------------
# the layer corpus


CASE_NAMES = [case.name for case in layer_corpus(Canary(Path("/tmp/lamina-canary-names")))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_layer(lamina: Lamina, corpus: Corpus, tmp_path: Path, name: str) -> None:
    """``FROM <busybox + the hostile layer>`` + ``RUN <check>``: nothing outside changes (not even for a moment);
    the build succeeds with the entry neutralised or fails with one error line naming the layer and the entry."""
    case = corpus.cases[name]
    dockerfile = f"FROM {corpus.images[name]}\nRUN {case.run}\n"
    run, changes = watched_build(lamina, corpus.canary, tmp_path, dockerfile)
    result = "neutralised" if run.returncode == 0 else "clear error"
    try:
        assert not changes, (f"{name}: {case.description}: the build changed things outside the rootfs:\n"
                             f"{describe_changes(changes)}\n{run.describe()}")
        assert "Traceback" not in run.output, run.describe()
        if run.returncode != 0:
            line = assert_clear_error(run, case.error_mentions)
            assert case.expect != "ok", f"{name}: expected the entry to be neutralised, got {line}"
            assert LAYER_NAMED.search(line), f"{name}: the error does not name the layer: {line}"
        else:
            assert case.expect != "error", f"{name}: {case.description}: accepted without an error\n{run.describe()}"
    except AssertionError:
        result = "FAILED"
        raise
    finally:
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        record(Outcome(name, "layer", result, changes, errors[0][:150] if errors else ""))


def test_devices_skipped_with_a_warning_without_cap_mknod(lamina: Lamina, corpus: Corpus, tmp_path: Path) -> None:
    """Without CAP_MKNOD (``setpriv --bounding-set=-mknod``) the device nodes are skipped with a warning; the fifo
    (no capability needed) is made; the build succeeds."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop CAP_MKNOD from it")
    context = write_context(tmp_path / "context", f"FROM {corpus.images['devices']}\n"
                            "RUN test ! -e /hostile-null && test ! -e /hostile-disk && test -p /hostile-fifo\n")
    argv = ["build", "--context", str(context), "--insecure-registry", lamina.registry.host, "--no-push",
            "--work-dir", str(tmp_path / "work")]
    corpus.canary.reset()
    before = corpus.canary.state()
    proc = subprocess.run([setpriv, "--bounding-set=-mknod", sys.executable, "-m", "lamina.cli", *argv],
                          env=lamina.environ(), capture_output=True, text=True, timeout=LAMINA_TIMEOUT, check=False)
    run = LaminaRun(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    changes = diff_states(before, corpus.canary.state())
    record(Outcome("devices without CAP_MKNOD", "layer", "neutralised" if run.returncode == 0 and not changes
                   else "FAILED", changes))
    assert not changes, describe_changes(changes)
    run.check()
    assert "Traceback" not in run.output, run.describe()
    assert "not permitted to create special file 'hostile-null'" in run.stderr, run.describe()
    assert "not permitted to create special file 'hostile-disk'" in run.stderr, run.describe()


def test_writer_pool_race_stays_inside(canary: Canary, tmp_path: Path) -> None:
    """unpack_layer writes small files on a thread pool; an entry that replaces their parent directory with a
    symlink out must not let a queued write follow it. The race is timing-dependent: several attempts."""
    import logging

    data = tar_bytes(pool_race_entries(str(canary.root)))
    outside: list[Change] = []
    attempts = 0
    logging.disable(logging.WARNING)
    try:
        deadline = time.monotonic() + 8
        while attempts < 20 and time.monotonic() < deadline and not outside:
            attempts += 1
            canary.reset()
            before = canary.state()
            try:
                unpack_layer(tmp_path / f"rootfs-{attempts}", io.BytesIO(data), description="pool-race")
            except Exception as exc:  # noqa: BLE001 - a clear RootfsError is fine here; only writes matter
                assert type(exc).__name__ == "RootfsError", repr(exc)
            outside = diff_states(before, canary.state())
    finally:
        logging.disable(logging.NOTSET)
    record(Outcome("pool-race (unpack_layer, direct)", "layer", "FAILED" if outside else "neutralised", outside,
                   f"{attempts} attempts"))
    assert not outside, (f"attempt {attempts}: queued writes followed a symlink that replaced their directory:\n"
                         f"{describe_changes(outside)}")


# ---------------------------------------------------------------------------------------------------------------
# contexts


def image_layers(layout: Path) -> tuple[list[bytes], dict[str, object]]:
    """The layer blobs and the config of the only image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    return [_blob(layout, d["digest"]) for d in manifest["layers"]], config


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_ = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_).read_bytes()


def top_layer(layout: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    layers, _ = image_layers(layout)
    return {m.name.removeprefix("./").rstrip("/"): (m, data) for m, data in layer_files(layers[-1])}


def all_layers_text(layout: Path) -> bytes:
    layers, config = image_layers(layout)
    return b"".join(decompressed(blob) for blob in layers) + json.dumps(config).encode()


def context_case(lamina: Lamina, canary: Canary, tmp_path: Path, name: str, dockerfile: str,
                 context: Path | None = None) -> tuple[LaminaRun, list[Change], Path]:
    layout = tmp_path / "layout"
    if context is None:
        context = hostile_context(tmp_path / "context", canary, dockerfile)
    run, changes = watched_build(lamina, canary, tmp_path, dockerfile, None, "--oci-layout-path", str(layout),
                                 context=context, in_subprocess=True)
    record(Outcome(name, "context", "neutralised" if run.returncode == 0 and not changes
                   else "clear error" if not changes and "Traceback" not in run.output else "FAILED", changes,
                   next((line[:150] for line in run.stderr.splitlines() if line.startswith("error:")), "")))
    assert not changes, f"{name}: changed outside the context:\n{describe_changes(changes)}\n{run.describe()}"
    assert "Traceback" not in run.output, run.describe()
    return run, changes, layout


def test_context_copy_dot_copies_links_as_links(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                                tmp_path: Path) -> None:
    run, _, layout = context_case(lamina, canary, tmp_path, "COPY . /app (links out, fifo)",
                                  f"FROM {base_images_busybox}\nCOPY . /app\n")
    run.check()
    entries = top_layer(layout)
    for link, target in (("app/link-file", f"{canary.root}/secret.txt"), ("app/link-dir", str(canary.root)),
                         ("app/rel-link", "../" * 24 + f"{canary.rel}/secret.txt")):
        member, _ = entries[link]
        assert member.issym() and member.linkname == target, (link, member.type, member.linkname)
    assert not any(name.startswith("app/link-dir/") for name in entries), sorted(entries)
    assert "app/fifo" not in entries or entries["app/fifo"][0].isfifo()
    assert CANARY_SECRET.encode() not in all_layers_text(layout)


@pytest.mark.parametrize(("source", "label"), [
    ("link-file", "absolute link to an outside file"),
    ("rel-link", "relative ../ link to an outside file"),
    ("link-dir/secret.txt", "a path through an absolute link to an outside dir"),
    ("rel-dir/secret.txt", "a path through a relative link to an outside dir"),
])
def test_context_top_level_link_is_resolved_inside(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                                   tmp_path: Path, source: str, label: str) -> None:
    run, _, layout = context_case(lamina, canary, tmp_path, f"COPY {source} /x ({label})",
                                  f"FROM {base_images_busybox}\nCOPY {source} /x\n")
    if run.returncode != 0:
        line = assert_clear_error(run)
        assert CANARY_SECRET not in line
        return
    _, data = top_layer(layout)["x"]
    assert data.decode() == DECOY + "\n", f"COPY {source} read {data!r}, not the decoy inside the context"
    assert CANARY_SECRET.encode() not in all_layers_text(layout)


def test_context_glob_through_outside_link(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                           tmp_path: Path) -> None:
    run, _, layout = context_case(lamina, canary, tmp_path, "COPY link-dir/*.txt (glob through a link out)",
                                  f"FROM {base_images_busybox}\nCOPY link-dir/*.txt /g/\n")
    if run.returncode != 0:
        assert_clear_error(run)
        return
    assert CANARY_SECRET.encode() not in all_layers_text(layout)


def test_run_bind_mount_of_outside_link(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                        tmp_path: Path) -> None:
    run, _, layout = context_case(
        lamina, canary, tmp_path, "RUN --mount=type=bind,source=link-dir",
        f"FROM {base_images_busybox}\n"
        "RUN --mount=type=bind,source=link-dir,target=/m cat /m/secret.txt > /m.txt; ls /m > /m.ls\n")
    if run.returncode != 0:
        assert_clear_error(run)
        return
    entries = top_layer(layout)
    assert entries["m.txt"][1].decode() == DECOY + "\n"
    assert CANARY_SECRET.encode() not in all_layers_text(layout)


def test_copy_directory_then_link_over_it(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                          tmp_path: Path) -> None:
    """``COPY one/ two/ /dest/``: one/x/{b,y}/ are written, then two/x (a link to the canary) replaces x; the
    deferred directory mtimes of x/b and x/y must not be applied through the link (to the canary's b and y)."""
    dockerfile = f"FROM {base_images_busybox}\nCOPY one/ two/ /dest/\n"
    context = dir_then_link_context(tmp_path / "context", canary, dockerfile)
    context_case(lamina, canary, tmp_path, "COPY one/ two/ (dir, then a link out over it)", dockerfile,
                 context=context)


def test_copy_from_stage_resolves_links_inside_the_stage(lamina: Lamina, canary: Canary, base_images_busybox: str,
                                                         tmp_path: Path) -> None:
    c = canary.root
    dockerfile = (
        f"FROM {base_images_busybox} AS src\n"
        f"RUN mkdir -p /data {c} && ln -s /etc /data/etc-link && ln -s {c} /data/out \\\n"
        f"    && echo {DECOY} > {c}/secret.txt\n"
        f"FROM {base_images_busybox}\n"
        "COPY --from=src /data/etc-link/passwd /p\n"
        "COPY --from=src /data/out/secret.txt /q\n"
        "COPY --from=src /data /d\n")
    run, _, layout = context_case(lamina, canary, tmp_path, "COPY --from through links to /etc and out", dockerfile,
                                  context=write_context(tmp_path / "context", dockerfile))
    run.check()
    layers, _ = image_layers(layout)
    files = {m.name.removeprefix("./"): (m, data) for blob in layers[-3:] for m, data in layer_files(blob)}
    assert files["p"][1].decode() == baseimages.PASSWD, "COPY --from read a passwd that is not the stage's"
    assert files["q"][1].decode() == DECOY + "\n"
    assert files["d/etc-link"][0].issym() and files["d/etc-link"][0].linkname == "/etc"
    assert files["d/out"][0].issym() and files["d/out"][0].linkname == str(c)
    assert CANARY_SECRET.encode() not in all_layers_text(layout)


ADD_CASES = ["dir-metadata-through-symlink", "dir-replaced-by-symlink", "symlink-then-file", "hardlink-dotdot",
             "pax-path", "gnu-longname", "whiteout-through-symlink", "devices"]


@pytest.mark.parametrize("name", ADD_CASES)
def test_add_hostile_archive(lamina: Lamina, corpus: Corpus, base_images_busybox: str, tmp_path: Path,
                             name: str) -> None:
    """ADD of a local tar archive extracts it: the same hostile tars, as archives in the context."""
    case = corpus.cases[name]
    dockerfile = f"FROM {base_images_busybox}\nADD hostile.tar /unpacked/\n"
    context = write_context(tmp_path / "context", dockerfile, {"hostile.tar": decompressed(case.blob)})
    run, changes = watched_build(lamina, corpus.canary, tmp_path, dockerfile, context=context)
    result = "FAILED" if changes or "Traceback" in run.output else \
        "neutralised" if run.returncode == 0 else "clear error"
    error = next((line[:150] for line in run.stderr.splitlines() if line.startswith("error:")), "")
    record(Outcome(f"ADD {name}", "add", result, changes, error))
    assert not changes, f"ADD {name}: changed outside the rootfs:\n{describe_changes(changes)}\n{run.describe()}"
    if run.returncode != 0:
        assert_clear_error(run)


# ---------------------------------------------------------------------------------------------------------------
# secrets


SECRET_VALUE = "tok-Zq8vN3xYh2LpR6wK"
ENV_SECRET_VALUE = "envtok-Hc4Jw9Tn7Vb1Xs5M"
ENV_SECRET_VARIABLE = "HOSTILE_TEST_TOKEN"


def secret_forms() -> dict[str, bytes]:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    forms = {
        "secret": SECRET_VALUE,
        "secret base64": b64(SECRET_VALUE),
        "env secret": ENV_SECRET_VALUE,
        "env secret base64": b64(ENV_SECRET_VALUE),
        "password": AUTH_PASSWORD,
        "password base64": b64(AUTH_PASSWORD),
        "user:password base64": b64(f"{AUTH_USER}:{AUTH_PASSWORD}"),
        "user:password base64url": base64.urlsafe_b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode(),
    }
    return {k: v.encode() for k, v in forms.items()}


def rot13(text: str) -> str:
    return text.translate(str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm"))


def find_secrets(where: str, data: bytes) -> list[str]:
    return [f"{form} in {where}" for form, needle in secret_forms().items() if needle in data]


def registry_get(registry: RunningRegistry, path: str, accept: str = "") -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(f"{registry.url}{path}", auth=(AUTH_USER, AUTH_PASSWORD), headers=headers, timeout=10)


def repository_contents(registry: RunningRegistry, repository: str) -> dict[str, bytes]:
    """Every tag's manifest, and the config and layer blobs it names (layers decompressed)."""
    out: dict[str, bytes] = {}
    tags = registry_get(registry, f"/v2/{repository}/tags/list").json().get("tags") or []
    accept = "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
    for tag in tags:
        body = registry_get(registry, f"/v2/{repository}/manifests/{tag}", accept).content
        out[f"{repository}:{tag} manifest"] = body
        out[f"{repository}:{tag} tag"] = tag.encode()
        manifest = json.loads(body)
        for descriptor in [manifest.get("config"), *manifest.get("layers", [])]:
            if not descriptor:
                continue
            blob = registry_get(registry, f"/v2/{repository}/blobs/{descriptor['digest']}").content
            out[f"{repository}:{tag} blob {descriptor['digest'][:19]}"] = decompressed(blob)
    return out


def test_secrets_never_leak(lamina: Lamina, auth_registry: RunningRegistry, auth_base_images: AuthBaseImages,
                            docker_config: Path, tmp_path: Path) -> None:
    secret_file = tmp_path / "tok.txt"
    secret_file.write_text(SECRET_VALUE)
    dockerfile = f"""\
        FROM {auth_base_images.busybox}
        ARG PLAIN=1
        RUN --mount=type=secret,id=tok tr a-z n-za-m < /run/secrets/tok > /rot13 && test -s /rot13
        RUN --mount=type=secret,id=tok,env=TOK --mount=type=secret,id=envtok test "${{#TOK}}" -gt 0 \\
            && cat /run/secrets/envtok | tr a-z n-za-m > /env-rot13 && echo used > /used
        RUN env > /env.txt && cat /proc/self/environ | tr '\\0' '\\n' > /environ.txt \\
            && (ls -la /run/secrets 2>&1 || true) > /ls.txt && (cat /proc/1/environ 2>/dev/null || true) > /pid1.txt
        """
    context = write_context(tmp_path / "context", dockerfile)
    host = auth_registry.host
    dest = f"{host}/hostile/secrets:1"
    cache_repo = f"{host}/hostile/secrets-cache"
    layout = tmp_path / "layout"
    args = ["--destination", dest, "--cache", "--cache-repo", cache_repo, "--secret", f"id=tok,src={secret_file}",
            "--secret", f"id=envtok,env={ENV_SECRET_VARIABLE}",
            "--verbosity", "debug", "--insecure-registry", host, "--oci-layout-path", str(layout),
            "--work-dir", str(tmp_path / "work")]
    extra_env = {ENV_SECRET_VARIABLE: ENV_SECRET_VALUE}
    run = lamina.build(context, *args, docker_config=docker_config, extra_env=extra_env, subprocess=True).check()
    leaks = find_secrets("lamina's output (--verbosity debug)", run.output.encode())

    layers, config = image_layers(layout)
    for i, blob in enumerate(layers):
        leaks += find_secrets(f"layer {i} (decompressed)", decompressed(blob))
    leaks += find_secrets("the config (history included)", json.dumps(config).encode())
    for where, data in repository_contents(auth_registry, "hostile/secrets").items():
        leaks += find_secrets(f"pushed {where}", data)
    cache = repository_contents(auth_registry, "hostile/secrets-cache")
    assert any(key.endswith("manifest") for key in cache), "no cache entry was stored"
    for where, data in cache.items():
        leaks += find_secrets(f"cache {where}", data)
    files = {m.name.removeprefix("./"): data for blob in layers[-3:] for m, data in layer_files(blob)}
    for name in ("env.txt", "environ.txt", "ls.txt", "pid1.txt"):
        leaks += find_secrets(f"/{name} of a later RUN", files.get(name, b""))
    assert files["rot13"].decode().strip() == rot13(SECRET_VALUE), "the secret was not mounted"
    assert files["used"] == b"used\n"
    assert files["env-rot13"].decode().strip() == rot13(ENV_SECRET_VALUE), "the env secret was not mounted"
    # the work dir is gone or holds no secret files
    for path in (tmp_path / "work").rglob("*") if (tmp_path / "work").exists() else []:
        if path.is_file() and not path.is_symlink():
            try:
                leaks += find_secrets(f"work dir file {path}", path.read_bytes())
            except OSError:
                pass
    record(Outcome("secrets: layers, config, history, cache, debug output, RUN env", "secret",
                   "FAILED" if leaks else "neutralised", [], "; ".join(leaks)[:150]))
    assert not leaks, "\n".join(leaks)

    # A different secret value must not change any cache key: the second build reuses every entry.
    tags_before = set(registry_get(auth_registry, "/v2/hostile/secrets-cache/tags/list").json()["tags"])
    secret_file.write_text(SECRET_VALUE[::-1])
    again = lamina.build(context, *args, docker_config=docker_config, extra_env=extra_env, subprocess=True).check()
    tags_after = set(registry_get(auth_registry, "/v2/hostile/secrets-cache/tags/list").json()["tags"])
    assert tags_after == tags_before, f"a new secret value made new cache keys: {sorted(tags_after - tags_before)}"
    assert not find_secrets("second build output", again.output.encode().replace(SECRET_VALUE[::-1].encode(), b""))


# ---------------------------------------------------------------------------------------------------------------
# summary


@pytest.fixture(scope="module")
def base_images_busybox(lamina: Lamina) -> str:
    return lamina.images.busybox


def test_zz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the module did (``-s`` or ``-rA`` shows it): corpus size, builds, outcomes, bytes written."""
    layer_cases = len(CASE_NAMES)
    written = sum(c.bytes_written for o in RESULTS for c in o.changes)
    changed = sum(len(o.changes) for o in RESULTS)
    lines = [
        (f"hostile corpus: {layer_cases} layer tars, {len(ADD_CASES)} ADD archives, "
         f"{sum(1 for o in RESULTS if o.kind == 'context')} context builds"),
        (f"builds/attempts: {len(RESULTS)}; clear errors: {sum(o.result == 'clear error' for o in RESULTS)}; "
         f"neutralised: {sum(o.result == 'neutralised' for o in RESULTS)}; "
         f"FAILED: {sum(o.result == 'FAILED' for o in RESULTS)}"),
        f"bytes written outside: {written}; entries changed outside (any metadata): {changed}",
    ]
    for o in RESULTS:
        lines.append(f"  [{o.kind:7}] {o.case:55} {o.result:12} changes={len(o.changes)} {o.note}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
