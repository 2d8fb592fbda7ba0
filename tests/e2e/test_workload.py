"""8. The ``files`` benchmark workload (../shared/bench/files), with Docker Hub names served by --registry-mirror, built
with both attestations (provenance in mode=max, the SBOM) and read back as issue 16 asks."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import BENCH_DIR, LaminaRun, Unpacked, unpack
from tests.support.baseimages import BUSYBOX_BIN

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def files_workload(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaminaRun, Path, Unpacked]:
    dockerfile = BENCH_DIR / "files" / "Dockerfile"
    if not dockerfile.is_file():
        pytest.skip(f"{dockerfile} is absent")
    tmp = tmp_path_factory.mktemp("bench")
    workloads = tmp / "workloads"
    (workloads / "files").mkdir(parents=True)
    # Its FROM lines name debian:bookworm and busybox, both held by the mirror: used unchanged.
    shutil.copy(dockerfile, workloads / "files" / "Dockerfile")
    subprocess.run([sys.executable, str(BENCH_DIR / "make-context.py"), str(workloads)], check=True, timeout=120)
    context = workloads / "files"
    dest = lamina.dest("bench-files")
    run = lamina.build(context, "--destination", dest, "--registry-mirror", lamina.images.mirror,
                       "--insecure-registry", lamina.images.mirror, "--sbom",
                       extra_env={"LAMINA_PROVENANCE": "mode=max"}).check()
    return run, context, unpack(f"docker://{dest}", tmp / "pulled")


def test_both_attestations(lamina: Lamina, files_workload: tuple[LaminaRun, Path, Unpacked], tmp_path: Path) -> None:
    from tests.e2e.test_attestations import read_index, statements, validate_statement
    from tests.e2e.test_sbom import validate_spdx

    run, _, _ = files_workload
    dest = next(line.split()[1].split("@")[0] for line in run.stdout.splitlines() if line.startswith("pushed "))
    image_digest = read_index(dest)[1]["digest"]
    found = statements(lamina, dest, tmp_path)
    assert set(found) == {"https://slsa.dev/provenance/v1", "https://spdx.dev/Document"}
    for statement in found.values():
        validate_statement(statement)
        assert statement["subject"][0]["digest"]["sha256"] == image_digest[7:]
    validate_spdx(found["https://spdx.dev/Document"]["predicate"], tmp_path / "spdx")
    provenance = found["https://slsa.dev/provenance/v1"]["predicate"]
    images = {d["uri"].split("@")[0] for d in provenance["buildDefinition"]["resolvedDependencies"]}
    assert {"pkg:docker/debian", "pkg:docker/busybox"} <= images  # both FROMs, as they were named
    steps = provenance["buildDefinition"]["internalParameters"]["buildConfig"]["steps"]
    assert "COPY --from=base /app /app" in [s["instruction"] for s in steps]


def test_all_sources_copied(files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    _, context, image = files_workload
    sources = sorted(p.relative_to(context).as_posix() for p in (context / "src").rglob("*.py"))
    copied = sorted(p.relative_to(image.path("app")).as_posix() for p in image.path("app/src").rglob("*.py"))
    assert len(sources) == 2000
    assert copied == sources
    for rel in ("src/pkg0/mod0.py", "src/pkg17/mod23.py", "src/pkg49/mod39.py"):
        assert image.path(f"app/{rel}").read_bytes() == (context / rel).read_bytes(), rel


def test_run_results(files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    _, _, image = files_workload
    assert image.read("app/count.txt").strip() == "2000"
    # chmod -R go-w /app in the Debian stage, carried over by COPY --from
    for rel in ("app/src/pkg3/mod4.py", "app/src/pkg3", "app/count.txt"):
        assert stat.S_IMODE(image.lstat(rel).st_mode) & 0o022 == 0, rel


def test_copy_from_debian_stage_libc(files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    _, _, image = files_workload
    libc = image.path("lib/libc.so.6")
    assert libc.is_file() and not libc.is_symlink()
    assert libc.read_bytes()[:4] == b"\x7fELF"


def test_final_image_is_busybox_based(files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    _, _, image = files_workload
    assert image.path("bin/busybox").read_bytes() == BUSYBOX_BIN.read_bytes()
    for absent in ("opt/data", "etc/debian_version", "usr/lib/x86_64-linux-gnu"):
        assert not image.exists(absent), absent
    # busybox layer + COPY --from + COPY --from
    assert len(image.manifest["layers"]) == 3


def test_config(files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    _, _, image = files_workload
    config = image.config["config"]
    assert config["Labels"] == {"org.opencontainers.image.title": "bench-files"}
    assert config["User"] == "nobody"
    assert config["Cmd"] == ["sh", "-c", "cat /app/count.txt"]
    # ENV and WORKDIR belong to the base stage only
    assert not [e for e in config.get("Env", []) if e.startswith("APP_HOME=")]
    assert config.get("WorkingDir", "") in ("", "/")


def test_pulled_through_the_mirror(lamina: Lamina, files_workload: tuple[LaminaRun, Path, Unpacked]) -> None:
    run, _, _ = files_workload
    assert "FROM debian:bookworm" in run.stdout
    log = lamina.registry.log_path.read_text(errors="replace")
    assert "/v2/library/debian/manifests/bookworm" in log
    assert "/v2/library/busybox/manifests/latest" in log
