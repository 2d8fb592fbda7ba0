"""``lamina warm`` (Kaniko's warmer): base images kept in --cache-dir serve later builds without their registry:
a digest reference always, a tag when the registry cannot be reached (with a warning); a Dockerfile's base images
found from its FROM lines; kept images not fetched again unless --force."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import lamina_in_process, write_context
from tests.support import baseimages
from tests.support.registry import start_registry


def test_warmed_images_build_without_their_registry(lamina: Lamina, tmp_path: Path) -> None:
    registry = start_registry(tmp_path / "registry")  # this test's own: it is stopped half-way
    try:
        layouts = baseimages.base_image_layouts(baseimages.cache_dir())
        image = f"{registry.host}/library/busybox:latest"
        baseimages.push_layout(layouts[baseimages.BUSYBOX], "latest", image)
        cache = tmp_path / "cache"
        dockerfile = write_context(tmp_path / "df", f"ARG BASE={image}\nFROM $BASE AS one\nFROM one\n"
                                   "FROM scratch\nCOPY --from=one /bin/busybox /busybox\n") / "Dockerfile"
        warmed = lamina_in_process(["warm", "--cache-dir", str(cache), "--dockerfile", str(dockerfile),
                                    "--insecure-registry", registry.host], lamina.environ()).check()
        assert f"{image}: kept sha256:" in warmed.stdout and "downloaded)" in warmed.stdout
        digest = warmed.stdout.split("kept ", 1)[1].split()[0]
        again = lamina_in_process(["warm", "-c", str(cache), "-i", image, "--insecure-registry", registry.host],
                                  lamina.environ()).check()
        assert f"{image}: kept already" in again.stdout
        by_digest = f"{registry.host}/library/busybox@{digest}"
        lamina_in_process(["warm", "-c", str(cache), "-i", by_digest, "--insecure-registry", registry.host],
                          lamina.environ()).check()
    finally:
        registry.stop()
    for base in (image, by_digest):
        context = write_context(tmp_path / f"ctx-{len(base)}", f"FROM {base}\nRUN echo offline > /o.txt\n")
        out = tmp_path / f"image-{len(base)}.tar"
        run = lamina.build(context, "--no-push", "--tar-path", str(out), "--cache-dir", str(cache),
                           "--insecure-registry", registry.host).check()
        assert out.exists()
        assert ("cannot be reached: using" in run.stdout) is (base == image)  # a digest never asks the registry
    nothing = lamina_in_process(["warm", "-c", str(cache)], lamina.environ())
    assert nothing.returncode == 2 and "give --image IMAGE" in nothing.stderr
    entries = list((cache / "images").glob("*.json"))
    assert len(entries) == 2 and all(json.loads(e.read_text())["manifest_digest"] == digest for e in entries)
