"""docker/build-push-action's inputs in lamina's Action: each mapped onto a build flag or refused with what to write
instead (lamina.ci.buildpush), through the whole environment → plan mapping."""

from __future__ import annotations

import pytest
import yaml

from lamina.ci import buildpush, github
from lamina.errors import OptionsError
from tests.unit.test_ci_github import NOW, ROOT, plan, runner_env

# docker/build-push-action v6's inputs (its action.yml): lamina's action declares every one, so that the runner
# never drops one with only an "Unexpected input" warning
BUILD_PUSH_ACTION_INPUTS = (
    "add-hosts", "allow", "annotations", "attests", "build-args", "build-contexts", "builder", "cache-from", "cache-to",
    "call", "cgroup-parent", "context", "file", "labels", "load", "network", "no-cache", "no-cache-filters", "outputs",
    "platforms", "provenance", "pull", "push", "sbom", "secrets", "secret-envs", "secret-files", "shm-size", "ssh",
    "tags", "target", "ulimit", "github-token")


def test_the_action_declares_every_build_push_action_input() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert set(BUILD_PUSH_ACTION_INPUTS) <= set(action["inputs"])


@pytest.mark.parametrize("cache_from, cache_to, repo, push_cache", [
    ("type=registry,ref=ghcr.io/Owner/App:buildcache", "type=registry,ref=ghcr.io/owner/app:buildcache,mode=max",
     "ghcr.io/owner/app", True),
    ("ghcr.io/owner/app:cache", "", "ghcr.io/owner/app", False),  # buildx's shorthand; read only
    ("", "type=registry,ref=reg.example:5000/team/cache,image-manifest=true,oci-mediatypes=true",
     "reg.example:5000/team/cache", True),
    ("type=registry,ref=user/app:main\ntype=registry,ref=user/app:pr-7", "type=registry,ref=user/app:pr-7",
     "docker.io/user/app", True),
])
def test_registry_cache_maps_onto_the_layer_cache(cache_from: str, cache_to: str, repo: str,
                                                  push_cache: bool) -> None:
    p = plan(cache_from=cache_from, cache_to=cache_to, tags="reg.example/team/app:1")
    assert p.options.cache and p.options.cache_repo == repo and p.options.push_cache is push_cache
    assert any("one tag per step" in note for note in p.notes)


def test_several_cache_repositories_use_the_first_written_and_say_so() -> None:
    p = plan(cache_from="type=registry,ref=reg.example/a:c", cache_to="type=registry,ref=reg.example/b:c")
    assert p.options.cache_repo == "reg.example/b"
    assert any("reg.example/a not used" in note for note in p.notes)


def test_local_cache_maps_onto_a_layout_cache() -> None:
    p = plan(cache_from="type=local,src=/tmp/.buildx-cache", cache_to="type=local,dest=/tmp/.buildx-cache,mode=max")
    assert p.options.cache and p.options.cache_repo == "oci:/tmp/.buildx-cache" and p.options.push_cache
    assert any("OCI layout /tmp/.buildx-cache" in note for note in p.notes)
    read_only = plan(cache_from="type=local,src=/Cache/Dir")
    assert read_only.options.cache_repo == "oci:/Cache/Dir" and not read_only.options.push_cache
    with pytest.raises(OptionsError, match="give the same directory as src and dest"):
        plan(cache_from="type=local,src=/tmp/.buildx-cache", cache_to="type=local,dest=/tmp/.buildx-cache-new")
    assert plan(cache_repo="oci:/Runner/Cache").options.cache_repo == "oci:/Runner/Cache"  # a path keeps its case


def test_lamina_inputs_win_over_the_build_push_action_spelling() -> None:
    p = plan(cache_to="type=registry,ref=reg.example/b:c", cache_repo="reg.example/mine")
    assert p.options.cache_repo == "reg.example/mine"
    assert any("wins over" in note for note in p.notes)
    assert not plan(cache_to="type=registry,ref=reg.example/b:c", no_cache="true").options.cache


@pytest.mark.parametrize("spec, message", [
    ("type=gha", "not in the GitHub Actions cache; use type=registry,ref="),
    ("type=gha,mode=max,scope=app", "GitHub Actions cache"),
    ("type=local", "type=local needs "),
    ("type=inline", "type=inline is neither"),
    ("type=s3,region=eu-west-1,bucket=b", "type=s3"),
    ("type=registry", "needs ref="),
    ("type=registry,ref=reg.example/app@sha256:" + "a" * 64, "without a digest"),
    ("type=registry,ref=Not A Reference", "ref=Not A Reference"),
    ("type=registry,mode", "has no '='"),
])
@pytest.mark.parametrize("which", ["cache_from", "cache_to"])
def test_other_cache_types_are_refused(spec: str, message: str, which: str) -> None:
    with pytest.raises(OptionsError, match="input cache-(from|to): ") as info:
        plan(**{which: spec})
    assert message in str(info.value)


def test_outputs_push_and_files() -> None:
    p = plan(outputs="type=image,name=reg.example/Team/app:1,push=true", tags="reg.example/team/app:2")
    assert p.push and p.tags == ("reg.example/team/app:2", "reg.example/team/app:1")
    p = plan(outputs="type=registry", tags="reg.example/team/app:2")
    assert p.push and not p.options.no_push
    p = plan(outputs="type=image,name=reg.example/team/app:1")
    assert not p.push and p.options.no_push
    p = plan(outputs="type=docker,dest=out/image.tar\ntype=oci,dest=out/layout,tar=false")
    assert str(p.options.tar_path) == "out/image.tar" and str(p.options.oci_layout_path) == "out/layout"
    assert str(plan(outputs="type=oci,dest=out/oci.tar").options.oci_tar_path) == "out/oci.tar"
    assert not plan(outputs="type=cacheonly", tags="reg.example/a:1").push


@pytest.mark.parametrize("outputs, message", [
    ("type=docker", "docker load -i FILE"),
    ("type=oci", "dest=FILE (a tar archive)"),
    ("type=local,dest=out", "does not export the root filesystem"),
    ("out/dir", "type=local"),
    ("type=tar,dest=out.tar", "type=tar"),
    ("type=wasm", "unknown output type 'wasm'"),
])
def test_outputs_lamina_cannot_write_are_refused(outputs: str, message: str) -> None:
    with pytest.raises(OptionsError, match="input outputs: ") as info:
        plan(outputs=outputs)
    assert message in str(info.value)


def test_load_is_refused_with_the_tar_path_way() -> None:
    with pytest.raises(OptionsError, match="input load: .*tar-path: image.tar"):
        plan(load="true")
    assert plan(load="false").options.tar_path is None


def test_platforms_and_secret_envs() -> None:
    env = runner_env(platforms="linux/arm64", secret_envs="token=MY_TOKEN,npm=NPM_TOKEN")
    env["MY_TOKEN"] = "s3cr3t"
    p = github.plan_from_environ(env, now=NOW)
    assert p.options.platform == "linux/arm64"
    assert ("token", "env", "MY_TOKEN") in p.options.secrets and ("npm", "env", "NPM_TOKEN") in p.options.secrets
    with pytest.raises(OptionsError, match="one platform per step"):
        plan(platforms="linux/amd64,linux/arm64")
    with pytest.raises(OptionsError, match="both set"):
        plan(platforms="linux/amd64", platform="linux/amd64")
    with pytest.raises(OptionsError, match="id=VARIABLE"):
        plan(secret_envs="MY_TOKEN")


def test_builder_only_inputs_are_noted() -> None:
    p = plan(builder="mybuilder", pull="true")
    assert any(note.startswith("input builder:") for note in p.notes)
    assert any(note.startswith("input pull:") for note in p.notes)
    assert not plan(provenance="false", pull="false").notes


def test_provenance_and_sbom_inputs_map_onto_the_attestations() -> None:
    assert plan().options.provenance_mode == "min" and not plan().options.sbom  # build-push-action's defaults
    maximal = plan(provenance="mode=max,version=v0.2", sbom="true").options
    assert (maximal.provenance_mode, maximal.provenance_version, maximal.sbom) == ("max", "v0.2", True)
    assert plan(provenance="false", sbom="false").options.provenance_mode is None
    generator = plan(sbom="generator=docker/buildkit-syft-scanner")
    assert generator.options.sbom and any(n.startswith("input sbom:") for n in generator.notes)


@pytest.mark.parametrize("name", sorted(buildpush.REFUSED_INPUTS))
def test_inputs_lamina_cannot_honour_are_refused(name: str) -> None:
    with pytest.raises(OptionsError, match=f"^input {name}: "):
        plan(**{name.replace("-", "_"): "x=1"})


def test_attributes_are_csv() -> None:
    assert buildpush.parse_attributes('type=image,"name=a/b:1,a/b:2",push=true', "outputs") == {
        "type": "image", "name": "a/b:1,a/b:2", "push": "true"}
    p = plan(outputs='type=image,"name=reg.example/a:1,reg.example/a:2",push=true')
    assert p.tags == ("reg.example/a:1", "reg.example/a:2")
