"""The GitHub Action end to end: ``entrypoint.sh`` in a simulated runner environment (INPUT_* with hyphens,
GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_REF, ...) against the loopback registries; and the action's Dockerfile
built by lamina itself. act needs a Docker engine, which the test machines lack: this is what act would run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LAMINA_TIMEOUT, clean_environ, inspect, inspect_config, tags, unpack, write_context
from tests.support.baseimages import AuthBaseImages, BaseImages
from tests.support.registry import RunningRegistry
from tests.support.runtime_image import python_base_context, runtime_image_context

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "ghs_FakeToken1234567890"


def read_outputs(path: Path) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT as the runner does: ``name<<DELIMITER`` ... ``DELIMITER`` blocks, or ``name=value``."""
    outputs: dict[str, str] = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, _, value = line.partition("=")
            outputs[name] = value
            i += 1
    return outputs


def run_action(workspace: Path, tmp: Path, inputs: Mapping[str, str], *, event: str = "push",
               ref: str = "refs/heads/main", extra: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run entrypoint.sh as the runner runs a container action: cwd = the workspace, inputs as INPUT_<NAME>."""
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    (tmp / "output").write_text("")
    (tmp / "summary").write_text("")
    (tmp / "event.json").write_text(json.dumps({"repository": {"default_branch": "main"}}))
    env = clean_environ({
        "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event, "GITHUB_REF": ref, "GITHUB_SHA": SHA,
        "GITHUB_REPOSITORY": "Owner/Repo", "GITHUB_ACTOR": "octocat", "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_EVENT_PATH": str(tmp / "event.json"), "GITHUB_OUTPUT": str(tmp / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp / "summary"), "RUNNER_TEMP": str(runner_temp),
        "XDG_CACHE_HOME": str(tmp / "xdg"),
    }, docker_config=tmp / "no-docker-config")
    env = {k: v for k, v in env.items() if not k.startswith(("INPUT_", "ACT"))}
    for name, value in inputs.items():
        env[f"INPUT_{name.upper()}"] = value  # hyphens kept, as the runner does
    env.update(extra or {})
    script = shutil.which("lamina", path=str(Path(sys.executable).parent)) or shutil.which("lamina")
    assert script, "the lamina console script is not installed (pip install -e .)"
    env["LAMINA"] = script
    return subprocess.run([str(ROOT / "entrypoint.sh")], cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=LAMINA_TIMEOUT, check=False)


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_build_push_outputs_summary_and_masking(tmp_path: Path, auth_registry: RunningRegistry,
                                                auth_base_images: AuthBaseImages) -> None:
    workspace = write_context(tmp_path / "workspace", f"""
        FROM {auth_base_images.busybox} AS build
        RUN echo built > /built.txt

        FROM {auth_base_images.busybox}
        COPY --from=build /built.txt /srv/built.txt
        ARG GREETING
        RUN echo "$GREETING" > /srv/greeting.txt
    """)
    host = auth_registry.host
    proc = run_action(workspace, tmp_path, {
        "images": f"{host}/GH/App", "tags": f"type=ref,event=branch\ntype=sha\n{host}/gh/app:extra",
        "push": "true", "registry": host, "username": AUTH_USER, "password": AUTH_PASSWORD,
        "github-token": TOKEN, "insecure-registry": host, "build-args": "GREETING=hello, world",
        "labels": "org.example.team=lamina",
    })
    assert proc.returncode == 0, describe(proc)
    creds = (AUTH_USER, AUTH_PASSWORD)
    assert sorted(tags(host, "gh/app", creds=creds)) == ["extra", "main", "sha-0123456"]
    registry_digest = inspect(f"docker://{host}/gh/app:main", creds=creds)["Digest"]
    config = inspect_config(f"docker://{host}/gh/app:main", creds=creds)
    assert config["config"]["Labels"]["org.example.team"] == "lamina"

    outputs = read_outputs(tmp_path / "output")
    assert outputs["digest"] == registry_digest
    assert outputs["imageid"] == config_digest(host, creds)
    assert outputs["tags"].splitlines() == [f"{host}/gh/app:main", f"{host}/gh/app:sha-0123456",
                                            f"{host}/gh/app:extra"]
    meta = json.loads(outputs["metadata"])
    assert meta["containerimage.digest"] == registry_digest and meta["pushed"] is True
    # 6 steps: the two FROMs, RUN, COPY, ARG, RUN (the labels input goes on the image config, as --label)
    assert meta["size"] > 0 and len(meta["steps"]) == 6 and meta["cache"]["hits"] == 0
    assert all({"stage", "instruction", "seconds", "cached"} <= set(step) for step in meta["steps"])

    summary = (tmp_path / "summary").read_text()
    assert registry_digest in summary and f"{host}/gh/app:main" in summary
    assert "| # | Stage | Step | Result | Seconds | Layer |" in summary and "| built |" in summary

    lines = proc.stdout.splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    assert lines[:2] == masks == [f"::add-mask::{AUTH_PASSWORD}", f"::add-mask::{TOKEN}"]
    assert "::group::Stage build" in lines and "::group::Stage stage-1" in lines
    rest = "\n".join(lines[2:]) + proc.stderr + summary + (tmp_path / "output").read_text()
    assert AUTH_PASSWORD not in rest and TOKEN not in rest
    assert not list((tmp_path / "runner-temp").iterdir()), "the temporary docker config was left behind"


def config_digest(host: str, creds: tuple[str, str]) -> str:
    from tests.e2e.helpers import inspect_raw

    manifest = json.loads(inspect_raw(f"docker://{host}/gh/app:main", creds=creds))
    return str(manifest["config"]["digest"])


def test_act_builds_but_does_not_push(tmp_path: Path, registry: RunningRegistry, base_images: BaseImages) -> None:
    workspace = write_context(tmp_path / "workspace", f"FROM {base_images.busybox}\nRUN echo hi > /hi\n")
    proc = run_action(workspace, tmp_path, {"tags": f"{registry.host}/gh/act:1", "insecure-registry": registry.host,
                                            "tar-path": str(tmp_path / "image.tar")}, extra={"ACT": "true"})
    assert proc.returncode == 0, describe(proc)
    assert "::notice title=lamina::running under act" in proc.stdout
    assert tags(registry.host, "gh/act") == []
    assert (tmp_path / "image.tar").stat().st_size > 0
    assert read_outputs(tmp_path / "output")["digest"].startswith("sha256:")


def test_dockerfile_error_is_an_annotation(tmp_path: Path, registry: RunningRegistry,
                                           base_images: BaseImages) -> None:
    workspace = write_context(tmp_path / "workspace", f"FROM {base_images.busybox}\nRUN true\nCOPY\n")
    proc = run_action(workspace, tmp_path, {"insecure-registry": registry.host})
    assert proc.returncode == 1, describe(proc)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error ")]
    assert errors and errors[0].startswith("::error title=Dockerfile,file=Dockerfile,line=3,col=1::"), errors
    assert "Build failed" in (tmp_path / "summary").read_text()


def test_failed_run_keeps_its_exit_code(tmp_path: Path, registry: RunningRegistry, base_images: BaseImages) -> None:
    workspace = write_context(tmp_path / "workspace", f"FROM {base_images.busybox}\nRUN echo '::warning::forged'; "
                              "exit 7\n")
    proc = run_action(workspace, tmp_path, {"insecure-registry": registry.host})
    assert proc.returncode == 7, describe(proc)
    lines = proc.stdout.splitlines()
    # annotated on the RUN's line, as Dockerfile errors are (the workspace is the repository root)
    errors = [line for line in lines if line.startswith("::error ")]
    assert errors == [("::error title=Dockerfile,file=Dockerfile,line=2,col=1::RUN echo '::warning::forged'; "
                       "exit 7 failed with exit code 7")], describe(proc)
    forged = lines.index("::warning::forged")  # printed while workflow commands were stopped
    assert any(line.startswith("::stop-commands::") for line in lines[:forged])


# ---------------------------------------------------------------------------------------------------------------
# the action's Dockerfile, built by lamina on a Debian base from the local registry


def test_action_dockerfile_builds_with_lamina(lamina: Lamina, tmp_path: Path, base_images: BaseImages) -> None:
    python_base = lamina.dest("python-base")
    base_context = python_base_context(tmp_path / "python-base", base_images.debian)
    lamina.build(base_context, "--destination", python_base).check()
    image = lamina.dest("lamina-image")
    context, build_args = runtime_image_context(tmp_path / "lamina-src", python_base)
    lamina.build(context, "--destination", image, *build_args).check()

    unpacked = unpack(f"docker://{image}", tmp_path / "unpacked")
    assert unpacked.config["config"]["Entrypoint"] == ["/lamina/entrypoint.sh"]
    assert unpacked.exists("/lamina/bin/lamina") and unpacked.exists("/lamina/entrypoint.sh")
    assert unpacked.lstat("/lamina/entrypoint.sh").st_mode & 0o111
    assert not unpacked.exists("/src"), "the source stays in the install stage"
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    proc = subprocess.run([chroot, str(unpacked.rootfs), "/lamina/bin/lamina", "--version"], capture_output=True,
                          text=True, timeout=120, check=False, env={"PATH": "/lamina/bin:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lamina {metadata.version('lamina')}"
