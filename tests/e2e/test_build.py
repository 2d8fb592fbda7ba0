"""Real builds on the busybox and Debian base images, pushed to the test registry and checked with skopeo + umoci."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, Unpacked, inspect, inspect_config, lamina_in_process, unpack, write_context
from tests.support.baseimages import DEFAULT_PATH, GROUP, require_static_busybox

pytestmark = pytest.mark.e2e


def built(lamina: Lamina, tmp: Path, name: str, dockerfile: str, files: dict[str, str] | None = None,
          args: tuple[str, ...] = ()) -> tuple[LaminaRun, Unpacked]:
    """Build ``dockerfile`` (pushed to a fresh repository), then pull it back with skopeo and unpack it with umoci."""
    context = write_context(tmp / "context", dockerfile, files)
    dest = lamina.dest(name)
    run = lamina.build(context, "--destination", dest, *args).check()
    return run, unpack(f"docker://{dest}", tmp / "pulled")


def owner(image: Unpacked, rel: str) -> tuple[int, int]:
    st = image.lstat(rel)
    return st.st_uid, st.st_gid


def mode(image: Unpacked, rel: str) -> int:
    return stat.S_IMODE(image.lstat(rel).st_mode)


# ---------------------------------------------------------------------------------------------------------------
# 1. deleting files: whiteouts (Debian)


@pytest.fixture(scope="module")
def whiteouts(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    _, image = built(lamina, tmp_path_factory.mktemp("whiteouts"), "whiteouts", f"""
        FROM {lamina.images.debian}
        RUN rm -rf /usr/share/doc /etc/motd && rm /usr/bin/perl5.36.0
        RUN mkdir -p /scratch/sub && echo tmp > /scratch/sub/file && echo keep > /scratch/keep
        RUN rm -rf /scratch/sub /usr/share/man && mkdir /usr/share/man && echo new > /usr/share/man/NEW
        RUN rm /etc/issue && mkdir /etc/issue && echo dir > /etc/issue/now-a-dir \\
            && rm -rf /etc/apt/apt.conf.d && echo now-a-file > /etc/apt/apt.conf.d
    """)
    return image


def test_deleted_base_files_are_absent(whiteouts: Unpacked) -> None:
    for gone in ("usr/share/doc", "etc/motd", "usr/bin/perl5.36.0"):
        assert not whiteouts.exists(gone), gone
    # Neighbours, and the other name of the deleted hard link, are still there.
    assert whiteouts.path("usr/share/common-licenses/Apache-2.0").is_file()
    assert whiteouts.path("usr/bin/perl").is_file()
    assert whiteouts.path("etc/os-release").exists()


def test_delete_layer_has_whiteout_entries(whiteouts: Unpacked) -> None:
    layer = whiteouts.layer(1)  # the first RUN
    for marker in ("usr/share/.wh.doc", "etc/.wh.motd", "usr/bin/.wh.perl5.36.0"):
        assert marker in layer, sorted(layer)
        assert layer[marker].isfile() and layer[marker].size == 0, marker
    assert not [n for n in layer if n.startswith("usr/share/doc/")], "a deleted directory's content is in the layer"


def test_whiteout_of_a_file_from_an_earlier_run(whiteouts: Unpacked) -> None:
    assert not whiteouts.exists("scratch/sub")
    assert whiteouts.read("scratch/keep") == "keep\n"
    assert "scratch/.wh.sub" in whiteouts.layer(3)


def test_recreated_directory_hides_the_old_content(whiteouts: Unpacked) -> None:
    assert sorted(os.listdir(whiteouts.path("usr/share/man"))) == ["NEW"]
    assert whiteouts.read("usr/share/man/NEW") == "new\n"
    names = whiteouts.layer(3)
    # Either an opaque marker or one whiteout per old entry: both are valid OCI.
    assert "usr/share/man/.wh..wh..opq" in names or "usr/share/man/.wh.man1" in names, sorted(names)


def test_file_replaced_by_a_directory_and_back(whiteouts: Unpacked) -> None:
    assert stat.S_ISDIR(whiteouts.lstat("etc/issue").st_mode)
    assert whiteouts.read("etc/issue/now-a-dir") == "dir\n"
    assert stat.S_ISREG(whiteouts.lstat("etc/apt/apt.conf.d").st_mode)
    assert whiteouts.read("etc/apt/apt.conf.d") == "now-a-file\n"


RUNTIME_PATHS = ("etc/hosts", "etc/resolv.conf", "etc/hostname", "proc/", "sys/", "dev/")


def leaked_runtime_paths(image: Unpacked, layers: range) -> list[str]:
    """Entries of ``layers`` that only the RUN sandbox made (mountpoints, bind-mounted files)."""
    return [f"layer {i}: {name}" for i in layers for name in image.layer(i)
            if name.startswith(RUNTIME_PATHS) or name in ("etc/hosts", "etc/resolv.conf", "etc/hostname")]


def test_run_sandbox_leaves_nothing_in_the_layers(whiteouts: Unpacked) -> None:
    assert leaked_runtime_paths(whiteouts, range(1, 5)) == []
    assert not whiteouts.exists("etc/hosts"), "Debian minbase has no /etc/hosts; RUN's mountpoint leaked"


def test_one_layer_per_run(whiteouts: Unpacked) -> None:
    assert len(whiteouts.manifest["layers"]) == 1 + 4
    assert len(whiteouts.config["rootfs"]["diff_ids"]) == 1 + 4


# ---------------------------------------------------------------------------------------------------------------
# 2. multi-stage: COPY --from a named stage, a stage index, a stage built FROM a stage, an image


@pytest.fixture(scope="module")
def multistage(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaminaRun, Unpacked]:
    busybox, debian = lamina.images.busybox, lamina.images.debian
    return built(lamina, tmp_path_factory.mktemp("multistage"), "multistage", f"""
        FROM {busybox} AS builder
        RUN mkdir -p /out && echo built > /out/artifact.txt && ln -s artifact.txt /out/link \\
            && ln /out/artifact.txt /out/hard.txt && echo secret > /builder-only.txt
        FROM {debian}
        RUN echo from-debian > /from-debian.txt
        FROM builder AS child
        RUN echo child > /out/child.txt && test -f /builder-only.txt
        FROM {busybox} AS never-used
        RUN echo this stage must not run && exit 3
        FROM {busybox}
        COPY --from=builder /out/ /app/
        COPY --from=1 /from-debian.txt /app/
        COPY --from=child /out/child.txt /app/child.txt
        COPY --from={busybox} /etc/group /imported-group
        COPY --from=builder --chown=www-data:staff --chmod=0600 /out/artifact.txt /owned/artifact.txt
        COPY --from=builder --chown=nobody:nogroup /out/artifact.txt /owned/by-nobody.txt
        COPY --from=1 /etc/os-release /followed/os-release
        COPY --from=builder /out/link /followed/link
    """)


def test_copy_from_named_stage(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    assert image.read("app/artifact.txt") == "built\n"
    assert os.readlink(image.path("app/link")) == "artifact.txt"


def test_copy_from_keeps_hard_links(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    a, b = image.lstat("app/artifact.txt"), image.lstat("app/hard.txt")
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev), "BuildKit's copy keeps hard links within one COPY"


def test_copy_from_stage_index(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    assert image.read("app/from-debian.txt") == "from-debian\n"


def test_copy_from_stage_built_on_a_stage(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    assert image.read("app/child.txt") == "child\n"


def test_copy_from_image(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    assert image.read("imported-group") == GROUP


def test_builder_files_stay_in_the_builder(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    for absent in ("builder-only.txt", "out", "from-debian.txt", "etc/os-release"):
        assert not image.exists(absent), absent
    # busybox base layer + one layer per COPY
    assert len(image.manifest["layers"]) == 1 + 8


def test_unused_stage_is_not_built(multistage: tuple[LaminaRun, Unpacked]) -> None:
    run, _ = multistage
    assert "this stage must not run" not in run.output


def test_copy_from_follows_a_symlink_named_as_source(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    # Debian's /etc/os-release -> ../usr/lib/os-release; out/link -> artifact.txt
    assert not image.path("followed/os-release").is_symlink()
    assert 'ID=debian' in image.read("followed/os-release")
    assert not image.path("followed/link").is_symlink()
    assert image.read("followed/link") == "built\n"


def test_copy_from_with_chown_names_and_chmod(multistage: tuple[LaminaRun, Unpacked]) -> None:
    _, image = multistage
    assert owner(image, "owned/artifact.txt") == (33, 50)  # www-data:staff in the busybox image
    assert mode(image, "owned/artifact.txt") == 0o600
    assert owner(image, "owned/by-nobody.txt") == (65534, 65534)
    assert image.read("owned/by-nobody.txt") == "built\n"


# ---------------------------------------------------------------------------------------------------------------
# 3. COPY --chown / --chmod with a user made by useradd (Debian)


@pytest.fixture(scope="module")
def ownership(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    tmp = tmp_path_factory.mktemp("ownership")
    context = write_context(tmp / "context", f"""
        FROM {lamina.images.debian}
        RUN groupadd -g 1500 appgrp && useradd -u 1234 -g appgrp -m -s /bin/sh appuser
        COPY --chown=appuser:appgrp a.txt /data/a.txt
        COPY --chown=4321:4322 b.txt /data/b.txt
        COPY --chmod=640 c.txt /data/c.txt
        COPY --chown=appuser --chmod=755 d.sh /data/d.sh
        COPY --chown=2345 b.txt /data/uid-only.txt
        COPY --chown=1234:appgrp tree/ /data/tree/
        COPY plain.txt exec.sh /data/plain/
        COPY plain.txt /home/appuser/
        COPY --chown=4321:4322 b.txt /made/by/chown/b.txt
        USER appuser
        RUN touch /tmp/made-by-appuser
    """, {"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n", "d.sh": "#!/bin/sh\n", "tree/sub/x.txt": "x\n",
          "plain.txt": "plain\n", "exec.sh": "#!/bin/sh\n"})
    os.chmod(context / "plain.txt", 0o600)
    os.chmod(context / "exec.sh", 0o750)
    os.chmod(context / "c.txt", 0o666)
    dest = lamina.dest("ownership")
    lamina.build(context, "--destination", dest).check()
    return unpack(f"docker://{dest}", tmp / "pulled")


def test_chown_user_and_group_names(ownership: Unpacked) -> None:
    assert owner(ownership, "data/a.txt") == (1234, 1500)
    assert ownership.read("data/a.txt") == "a\n"


def test_chown_numeric(ownership: Unpacked) -> None:
    assert owner(ownership, "data/b.txt") == (4321, 4322)


def test_chmod(ownership: Unpacked) -> None:
    assert mode(ownership, "data/c.txt") == 0o640
    assert owner(ownership, "data/c.txt") == (0, 0)


def test_chown_user_name_only_takes_its_primary_group(ownership: Unpacked) -> None:
    # BuildKit (solver/llbsolver/file/user_linux.go, readUser): a user given by name without a group gets the
    # passwd entry's gid; only a numeric uid without a group doubles as the gid.
    assert mode(ownership, "data/d.sh") == 0o755
    assert owner(ownership, "data/d.sh") == (1234, 1500)


def test_chown_numeric_uid_only_doubles_as_gid(ownership: Unpacked) -> None:
    assert owner(ownership, "data/uid-only.txt") == (2345, 2345)


def test_chown_applies_to_a_copied_tree(ownership: Unpacked) -> None:
    assert owner(ownership, "data/tree/sub/x.txt") == (1234, 1500)
    assert owner(ownership, "data/tree/sub") == (1234, 1500)


def test_plain_copy_keeps_modes_and_belongs_to_root(ownership: Unpacked) -> None:
    assert mode(ownership, "data/plain/plain.txt") == 0o600
    assert mode(ownership, "data/plain/exec.sh") == 0o750
    assert owner(ownership, "data/plain/plain.txt") == (0, 0)
    assert owner(ownership, "data/plain/exec.sh") == (0, 0)


def test_copy_into_an_existing_directory_keeps_its_owner(ownership: Unpacked) -> None:
    assert owner(ownership, "home/appuser") == (1234, 1500)
    assert owner(ownership, "home/appuser/plain.txt") == (0, 0)


def test_chown_applies_to_directories_the_copy_creates(ownership: Unpacked) -> None:
    # BuildKit (fsutil copy.Copy → MkdirAll with the chowner): missing destination directories get the owner too.
    assert owner(ownership, "made/by/chown/b.txt") == (4321, 4322)
    assert owner(ownership, "made/by/chown") == (4321, 4322)
    assert owner(ownership, "made") == (4321, 4322)


def test_run_as_created_user(ownership: Unpacked) -> None:
    assert owner(ownership, "tmp/made-by-appuser") == (1234, 1500)
    assert ownership.config["config"]["User"] == "appuser"


# ---------------------------------------------------------------------------------------------------------------
# 9. metadata instructions in the image config; RUN environment, user, working directory; shell and exec form

CONFIG_INSTRUCTIONS = [
    ("ARG", True), ("ARG", True), ("ENV", True), ("LABEL", True), ("EXPOSE", True), ("WORKDIR", False),
    ("RUN", False), ("RUN", False), ("USER", True), ("RUN", False), ("ENTRYPOINT", True),
]


@pytest.fixture(scope="module")
def configured(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaminaRun, Unpacked]:
    base = lamina.images.busybox
    return built(lamina, tmp_path_factory.mktemp("config"), "config", f"""
        ARG BASE={base}
        FROM $BASE
        ARG GREETING=hello
        ARG FROM_CLI
        ENV APP_HOME=/srv/app PATH=/opt/bin:$PATH
        LABEL org.example.title="e2e config" org.example.greeting=$GREETING
        EXPOSE 8080 53/udp
        WORKDIR $APP_HOME/work
        RUN echo "$GREETING|$FROM_CLI|$APP_HOME|$PATH" > /env.txt && pwd > /pwd.txt
        RUN ["/bin/mkdir", "-p", "/exec/$APP_HOME"]
        USER 1000
        RUN id -u > /tmp/uid
        ENTRYPOINT ["/bin/echo", "entry"]
    """, args=("--build-arg", "FROM_CLI=from-cli", "--build-arg", "UNCONSUMED=x"))


def test_env_in_config(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    env = image.config["config"]["Env"]
    assert "APP_HOME=/srv/app" in env
    assert f"PATH=/opt/bin:{DEFAULT_PATH}" in env
    assert not [e for e in env if e.startswith(("GREETING=", "FROM_CLI=", "BASE="))], "ARGs leaked into Env"


def test_labels_ports_workdir_user(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    config = image.config["config"]
    assert config["Labels"] == {"org.example.title": "e2e config", "org.example.greeting": "hello"}
    assert config["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert config["WorkingDir"] == "/srv/app/work"
    assert config["User"] == "1000"


def test_entrypoint_resets_inherited_cmd(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    config = image.config["config"]
    assert config["Entrypoint"] == ["/bin/echo", "entry"]
    assert not config.get("Cmd"), "busybox's CMD [sh] must not survive an ENTRYPOINT in the child"


def test_workdir_created(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    assert stat.S_ISDIR(image.lstat("srv/app/work").st_mode)
    assert image.read("pwd.txt") == "/srv/app/work\n"


def test_run_sees_env_and_args(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    assert image.read("env.txt") == f"hello|from-cli|/srv/app|/opt/bin:{DEFAULT_PATH}\n"


def test_exec_form_run_does_not_expand_variables(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    assert image.path("exec/$APP_HOME").is_dir()
    assert not image.exists("exec/srv")


def test_user_applies_to_run(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    assert image.read("tmp/uid") == "1000\n"
    assert image.lstat("tmp/uid").st_uid == 1000


def test_run_sandbox_leaves_nothing_in_busybox_layers(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    assert leaked_runtime_paths(image, range(1, len(image.manifest["layers"]))) == []
    assert not image.exists("etc/hosts") and not image.exists("etc/resolv.conf")


def test_history_one_entry_per_instruction(configured: tuple[LaminaRun, Unpacked]) -> None:
    _, image = configured
    history: list[dict[str, Any]] = image.config["history"]
    ours = history[-len(CONFIG_INSTRUCTIONS):]
    base = history[:-len(CONFIG_INSTRUCTIONS)]
    assert len(base) == 1, "the busybox base image has one history entry"
    for entry, (keyword, empty) in zip(ours, CONFIG_INSTRUCTIONS, strict=True):
        assert entry["created_by"].split()[0] == keyword, entry
        assert bool(entry.get("empty_layer")) is empty, entry
    non_empty = [h for h in history if not h.get("empty_layer")]
    assert len(non_empty) == len(image.config["rootfs"]["diff_ids"]) == len(image.manifest["layers"])


def test_unconsumed_build_arg_is_reported(configured: tuple[LaminaRun, Unpacked]) -> None:
    run, _ = configured
    assert "UNCONSUMED" in run.output
    assert "FROM_CLI" not in next(line for line in run.output.splitlines() if "not consumed" in line)


@pytest.fixture(scope="module")
def command_forms(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_context(tmp_path_factory.mktemp("commands") / "context", f"""
        FROM {lamina.images.busybox} AS entry-shell
        ENTRYPOINT echo hello
        CMD ["--flag"]

        FROM {lamina.images.busybox} AS cmd-shell
        CMD echo hi
    """)


def test_shell_form_entrypoint_then_cmd(lamina: Lamina, command_forms: Path) -> None:
    dest = lamina.dest("entry-shell")
    lamina.build(command_forms, "--destination", dest, "--target", "entry-shell").check()
    config = inspect_config(f"docker://{dest}")["config"]
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo hello"]
    assert config["Cmd"] == ["--flag"]


def test_shell_form_cmd(lamina: Lamina, command_forms: Path) -> None:
    dest = lamina.dest("cmd-shell")
    lamina.build(command_forms, "--destination", dest).check()
    config = inspect_config(f"docker://{dest}")["config"]
    assert config["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert not config.get("Entrypoint")


# ---------------------------------------------------------------------------------------------------------------
# hard links and symlinks made by RUN survive the round trip


def test_links_made_by_run(lamina: Lamina, tmp_path: Path) -> None:
    _, image = built(lamina, tmp_path, "links", f"""
        FROM {lamina.images.busybox}
        RUN mkdir /links && echo one > /links/a && ln /links/a /links/b && ln -s a /links/rel \\
            && ln -s /links/a /links/abs && ln -s /nowhere /links/dangling && chmod 4755 /links/a
    """)
    a, b = image.lstat("links/a"), image.lstat("links/b")
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev), "hard link became two files"
    assert stat.S_IMODE(a.st_mode) == 0o4755
    assert os.readlink(image.path("links/rel")) == "a"
    assert os.readlink(image.path("links/abs")) == "/links/a"
    assert os.readlink(image.path("links/dangling")) == "/nowhere"
    assert image.read("links/b") == "one\n"


# ---------------------------------------------------------------------------------------------------------------
# COPY and RUN corner cases a real Dockerfile meets (Debian: merged /usr, so /lib is a symlink)

LONG_NAME = "deep/" + "d" * 60 + "/" + "f" * 90 + ".txt"  # over tar's 100-byte name field
UNICODE_NAME = "héllo-ünïcode ☃.txt"
CONTEXT_MTIME = 1_600_000_000


@pytest.fixture(scope="module")
def corners(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    tmp = tmp_path_factory.mktemp("corners")
    context = write_context(tmp / "context", f"""
        FROM {lamina.images.debian}
        COPY --chmod=644 libe2e.so /lib/x86_64-linux-gnu/
        RUN chmod 600 /etc/debian_version && mkfifo -m 640 /run/e2e.fifo
        COPY ["dir with spaces/", "/spaced dest/"]
        COPY *.txt /globbed/
        COPY . /ctx/
        COPY --chmod=750 tree /chmod-tree/
        COPY links/ /links/
        COPY links/relative /followed.txt
        ENV MSG="hello world" QUOTED='single $NOPE' SAME=$MSG
        ENV AFTER=$MSG
        WORKDIR relative
        WORKDIR sub
        RUN pwd > /workdir.txt && echo "$MSG|$QUOTED|$SAME|$AFTER" > /env.txt && echo relative > here.txt
    """, {
        "libe2e.so": "not really a library\n",
        "dir with spaces/inner file.txt": "spaced\n",
        "a.txt": "a\n", "b.txt": "b\n", "c.md": "c\n",
        LONG_NAME: "long\n",
        UNICODE_NAME: "unicode\n",
        "secret.env": "TOKEN=do-not-ship\n",
        "logs/build.log": "noise\n",
        "logs/keep.log": "kept by an exception rule\n",
        "tree/x/y.txt": "y\n",
        "links/target.txt": "target\n",
        ".dockerignore": "secret.env\nlogs/*.log\n!logs/keep.log\n",
    })
    (context / "tree" / "empty-dir").mkdir()
    os.symlink("/etc/shadow", context / "links" / "absolute")
    os.symlink("target.txt", context / "links" / "relative")
    os.utime(context / "a.txt", (CONTEXT_MTIME, CONTEXT_MTIME))
    dest = lamina.dest("corners")
    lamina.build(context, "--destination", dest).check()
    return unpack(f"docker://{dest}", tmp / "pulled")


def test_copy_through_a_symlinked_directory(corners: Unpacked) -> None:
    assert os.readlink(corners.path("lib")) == "usr/lib", "COPY replaced the /lib symlink"
    assert corners.read("usr/lib/x86_64-linux-gnu/libe2e.so") == "not really a library\n"
    assert corners.path("usr/lib/x86_64-linux-gnu/libc.so.6").exists()


def test_metadata_only_change_and_fifo(corners: Unpacked) -> None:
    assert mode(corners, "etc/debian_version") == 0o600
    fifo = corners.lstat("run/e2e.fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640


def test_copy_json_form_with_spaces(corners: Unpacked) -> None:
    assert corners.read("spaced dest/inner file.txt") == "spaced\n"


def test_copy_wildcard(corners: Unpacked) -> None:
    assert sorted(os.listdir(corners.path("globbed"))) == sorted(["a.txt", "b.txt", UNICODE_NAME])


def test_copy_keeps_mtime(corners: Unpacked) -> None:
    assert int(corners.lstat("globbed/a.txt").st_mtime) == CONTEXT_MTIME


def test_long_and_unicode_names(corners: Unpacked) -> None:
    assert corners.read(f"ctx/{LONG_NAME}") == "long\n"
    assert corners.read(f"ctx/{UNICODE_NAME}") == "unicode\n"


def test_symlinks_in_a_copied_directory_stay_links(corners: Unpacked) -> None:
    assert os.readlink(corners.path("links/absolute")) == "/etc/shadow"
    assert os.readlink(corners.path("links/relative")) == "target.txt"
    # A symlink named as the source is followed.
    assert not corners.path("followed.txt").is_symlink()
    assert corners.read("followed.txt") == "target\n"


def test_dockerignore(corners: Unpacked) -> None:
    assert not corners.exists("ctx/secret.env")
    assert not corners.exists("ctx/logs/build.log")
    assert corners.read("ctx/logs/keep.log") == "kept by an exception rule\n"
    assert corners.read("ctx/Dockerfile").startswith("FROM ")


def test_copy_chmod_applies_to_directories_too(corners: Unpacked) -> None:
    assert mode(corners, "chmod-tree/x/y.txt") == 0o750
    assert mode(corners, "chmod-tree/x") == 0o750
    assert mode(corners, "chmod-tree/empty-dir") == 0o750


def test_env_quoting_and_relative_workdir(corners: Unpacked) -> None:
    env = corners.config["config"]["Env"]
    assert "MSG=hello world" in env
    assert "QUOTED=single $NOPE" in env
    # Docker: an ENV line expands variables with the values from before that line.
    assert "SAME=" in env
    assert "AFTER=hello world" in env
    assert corners.read("env.txt") == "hello world|single $NOPE||hello world\n"
    assert corners.config["config"]["WorkingDir"] == "/relative/sub"
    assert corners.read("workdir.txt") == "/relative/sub\n"
    assert corners.read("relative/sub/here.txt") == "relative\n"


def test_run_in_an_image_without_passwd(lamina: Lamina, tmp_path: Path) -> None:
    """A root filesystem without /etc/passwd (scratch plus a static shell): RUN as the default user must work.

    BuildKit runs as uid 0 when no USER is set, without looking up a passwd file.
    """
    busybox = require_static_busybox().read_bytes()
    context = write_context(tmp_path / "context", """
        FROM scratch
        COPY busybox /bin/busybox
        RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo ran > /ran.txt"]
    """, {"busybox": busybox})
    os.chmod(context / "busybox", 0o755)
    dest = lamina.dest("no-passwd")
    lamina.build(context, "--destination", dest).check()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    assert image.read("ran.txt") == "ran\n"


# ---------------------------------------------------------------------------------------------------------------
# FROM by digest, global ARGs, flags from LAMINA_* variables


def test_from_digest_and_global_args(lamina: Lamina, tmp_path: Path) -> None:
    repo = lamina.images.busybox.rsplit(":", 1)[0]
    _, image = built(lamina, tmp_path, "from-digest", f"""
        ARG VERSION=1.0
        ARG DIGEST
        FROM {repo}@$DIGEST
        ARG VERSION
        ARG UNSET_IN_STAGE
        RUN echo "v=$VERSION u=${{UNSET_IN_STAGE:-none}}" > /version.txt
    """, args=("--build-arg", "VERSION=2.0", "--build-arg", f"DIGEST={lamina.images.busybox_digest}"))
    assert image.read("version.txt") == "v=2.0 u=none\n"
    assert image.path("bin/busybox").is_file()


def test_flags_from_lamina_environment_variables(lamina: Lamina, tmp_path: Path) -> None:
    context = write_context(tmp_path / "context", f"""
        FROM {lamina.images.busybox}
        ARG COLOUR
        RUN echo "$COLOUR" > /colour.txt
    """)
    first, second = lamina.dest("env-flags-a"), lamina.dest("env-flags-b")
    digest_file = tmp_path / "digest"
    environ = lamina.environ({
        "LAMINA_CONTEXT": str(context), "LAMINA_DESTINATION": f"{first},{second}",
        "LAMINA_BUILD_ARG": "COLOUR=teal", "LAMINA_DIGEST_FILE": str(digest_file),
        "LAMINA_INSECURE_REGISTRY": lamina.registry.host,
    })
    lamina_in_process(["build"], environ).check()
    digest = digest_file.read_text().strip()
    for i, dest in enumerate((first, second)):
        assert inspect(f"docker://{dest}")["Digest"] == digest
        image = unpack(f"docker://{dest}", tmp_path / f"pulled-{i}")
        assert image.read("colour.txt") == "teal\n"


def test_target_stage_built_on_a_stage_deletes_its_files(lamina: Lamina, tmp_path: Path) -> None:
    """--target of a stage FROM another stage: the parent's layers are reused, its files deleted by whiteouts."""
    _, image = built(lamina, tmp_path, "stage-whiteout", f"""
        FROM {lamina.images.busybox} AS parent
        RUN mkdir /work && echo keep > /work/keep && echo drop > /work/drop && echo gone > /gone.txt
        FROM parent AS child
        RUN rm /work/drop /gone.txt /bin/vi && echo child > /work/child
        FROM {lamina.images.busybox} AS last
        RUN echo must-not-run-for-the-target && exit 9
    """, args=("--target", "child"))
    assert image.read("work/keep") == "keep\n"
    assert image.read("work/child") == "child\n"
    for absent in ("work/drop", "gone.txt", "bin/vi"):
        assert not image.exists(absent), absent
    assert len(image.manifest["layers"]) == 3  # busybox, parent's RUN, child's RUN
    top = image.layer(-1)
    assert {"work/.wh.drop", ".wh.gone.txt", "bin/.wh.vi"} <= set(top), sorted(top)


def test_user_name_gives_groups_to_run(lamina: Lamina, tmp_path: Path) -> None:
    _, image = built(lamina, tmp_path, "user-groups", f"""
        FROM {lamina.images.busybox}
        USER www-data
        RUN id -u > /tmp/uid && id -g > /tmp/gid && id -G > /tmp/groups
        USER nobody:staff
        RUN id -u > /tmp/uid2 && id -g > /tmp/gid2
    """)
    assert image.read("tmp/uid") == "33\n"
    assert image.read("tmp/gid") == "33\n"
    # busybox's /etc/group: staff:x:50:daemon,www-data
    assert image.read("tmp/groups").split() == ["33", "50"]
    assert owner(image, "tmp/groups") == (33, 33)
    assert image.read("tmp/uid2") == "65534\n"
    assert image.read("tmp/gid2") == "50\n"
    assert image.config["config"]["User"] == "nobody:staff"


def test_dockerfile_elsewhere_with_its_own_dockerignore(lamina: Lamina, tmp_path: Path) -> None:
    """--dockerfile relative to the context (as Kaniko allows) and BuildKit's <Dockerfile>.dockerignore."""
    context = write_context(tmp_path / "context", "FROM scratch\n", {
        "build/app.Dockerfile": f"FROM {lamina.images.busybox}\nCOPY . /src/\n",
        "build/app.Dockerfile.dockerignore": "secret.txt\n",
        ".dockerignore": "kept-by-specific-ignore.txt\n",
        "secret.txt": "secret\n",
        "kept-by-specific-ignore.txt": "kept\n",
    })
    (context / "Dockerfile").unlink()
    dest = lamina.dest("dockerfile-path")
    lamina.build(context, "--dockerfile", "build/app.Dockerfile", "--destination", dest,
                 "--platform", "linux/amd64").check()
    image = unpack(f"docker://{dest}", tmp_path / "pulled")
    assert not image.exists("src/secret.txt")
    assert image.read("src/kept-by-specific-ignore.txt") == "kept\n"
    assert image.config["architecture"] == "amd64" and image.config["os"] == "linux"
