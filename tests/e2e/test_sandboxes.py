"""The RUN sandboxes where they are meant to run, for real.

* ``chroot``: lamina started under a Docker-default-like profile: the capabilities Docker drops removed with
  ``capsh --drop`` and a seccomp filter (Debian's python3-seccomp, run by Debian's /usr/bin/python3) refusing
  unshare, mount, setns, pivot_root and namespace flags of clone (clone3 gets ENOSYS, as Docker's profile does).
  ``--sandbox auto`` has to pick chroot there, and Debian RUN steps with apt-get, dpkg, useradd and chown work.
* ``rootless``: an ordinary user with subordinate ids builds with a venv made from Debian's python3; a file chowned
  by RUN to 1234:1234 keeps those ids in the layer.
* A build killed with SIGTERM in the middle of ``RUN sleep`` leaves no mounts, no processes and no work directory.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import AGENT_KEYS, LAMINA_TIMEOUT, LaminaRun, require_tool, unpack, write_context

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
DOCKER_KEPT_CAPS = frozenset({"cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
                              "cap_setuid", "cap_setpcap", "cap_net_bind_service", "cap_net_raw", "cap_sys_chroot",
                              "cap_mknod", "cap_audit_write", "cap_setfcap"})
ROOTLESS_USER = "lamina-rootless"
SUBORDINATE = "200000:65536"

SECCOMP_WRAPPER = r'''
import errno, os, sys
import seccomp

NAMESPACE_FLAGS = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x02000000)
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.set_attr(seccomp.Attr.CTL_NNP, 0)
for name in ("unshare", "mount", "umount", "umount2", "pivot_root", "setns", "open_tree", "move_mount", "fsopen",
             "fsmount", "fsconfig", "fspick", "mount_setattr"):
    try:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except (RuntimeError, ValueError):
        pass
for flag in NAMESPACE_FLAGS:
    f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
f.load()
os.execvp(sys.argv[1], sys.argv[1:])
'''


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests run as root (they set up users, capabilities and seccomp)", pytrace=False)


def _debian_python_with(module: str, package: str) -> None:
    if not DEBIAN_PYTHON.exists():
        pytest.fail("Debian's /usr/bin/python3 is missing (apt-get install python3)", pytrace=False)
    probe = subprocess.run([str(DEBIAN_PYTHON), "-c", f"import {module}"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.fail(f"Debian's python3 lacks {module} (apt-get install {package}); .ci/run installs it",
                    pytrace=False)


def _unprivileged_prefix(tmp: Path) -> list[str]:
    """argv prefix: seccomp filter, then capsh dropping what Docker drops, then bash execs the rest."""
    _debian_python_with("seccomp", "python3-seccomp")
    capsh = require_tool("capsh")
    bounding = subprocess.run([capsh, "--print"], capture_output=True, text=True, check=True).stdout
    line = next(text for text in bounding.splitlines() if text.startswith("Bounding set ="))
    every = [cap for cap in line.split("=", 1)[1].strip().split(",") if cap]
    drop = sorted(set(every) - DOCKER_KEPT_CAPS)
    wrapper = tmp / "seccomp_exec.py"
    wrapper.write_text(SECCOMP_WRAPPER)
    return [str(DEBIAN_PYTHON), str(wrapper), capsh, "--drop=" + ",".join(drop), "--", "-c", 'exec "$0" "$@"']


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> LaminaRun:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=LAMINA_TIMEOUT,
                          check=False)
    return LaminaRun(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def _lamina_env(lamina: Lamina) -> dict[str, str]:
    env = lamina.environ()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


# ---------------------------------------------------------------------------------------------------------------
# chroot: an unprivileged container


def test_unprivileged_profile_refuses_namespaces(tmp_path: Path) -> None:
    """The profile itself: without it unshare works (we are root), under it unshare is refused."""
    _require_root()
    prefix = _unprivileged_prefix(tmp_path)
    code = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.unshare(0x00020000); "
            "print(r, ctypes.get_errno(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    check = [sys.executable, "-c", code]
    out = subprocess.run(prefix + check, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out[0] == "-1" and out[1] == "1", out  # EPERM
    caps = int(out[2], 16)
    assert not caps >> 21 & 1  # no CAP_SYS_ADMIN
    assert caps >> 18 & 1 and caps >> 27 & 1  # CAP_SYS_CHROOT, CAP_MKNOD kept


def test_chroot_sandbox_in_unprivileged_container_builds_debian(lamina: Lamina, tmp_path: Path) -> None:
    _require_root()
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.debian}
        RUN apt-get --version | head -1 && dpkg -l | grep -c '^ii' && test -c /dev/null && echo ok > /dev/null
        RUN useradd -u 1500 -m builder && mkdir /data && chown 1500:1500 /data \\
            && touch /data/f && chown 1234:2345 /data/f && chmod 640 /data/f
        USER builder
        WORKDIR /home/builder
        RUN id -u > uid && echo "$HOME" > home && pwd > cwd && ls /proc | wc -l > proc-entries
    """)
    dest = lamina.dest("unprivileged")
    argv = _unprivileged_prefix(tmp_path) + [sys.executable, "-m", "lamina.cli", "build", "--context", str(context),
                                             "--insecure-registry", lamina.registry.host, "--destination", dest]
    run = _run(argv, _lamina_env(lamina)).check()
    assert "sandbox: chroot" in run.output, run.describe()
    assert sum("/proc" in line and "warning" in line for line in run.output.splitlines()) == 1, run.describe()
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert (image.lstat("data").st_uid, image.lstat("data").st_gid) == (1500, 1500)
    f = image.lstat("data/f")
    assert (f.st_uid, f.st_gid, f.st_mode & 0o777) == (1234, 2345, 0o640)
    assert "builder:x:1500:1500" in image.read("etc/passwd")
    assert image.read("home/builder/uid").strip() == "1500"
    assert image.read("home/builder/home").strip() == "/home/builder"
    assert image.read("home/builder/cwd").strip() == "/home/builder"
    assert image.read("home/builder/proc-entries").strip() == "0"
    assert image.lstat("home/builder/uid").st_uid == 1500
    # the device nodes made for RUN never reach a layer
    for index in range(1, 4):
        names = image.layer_names(-index)
        assert not any(n.startswith(("dev/", "proc/")) for n in names), names


def test_chroot_sandbox_places_run_mounts_under_the_unprivileged_profile(lamina: Lamina, tmp_path: Path) -> None:
    """Where mount(2) is refused (seccomp, no CAP_SYS_ADMIN), every RUN --mount type still works: placed."""
    _require_root()
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.busybox}
        RUN --mount=type=tmpfs,target=/scratch --mount=type=secret,id=s --mount=type=cache,target=/c \\
            --mount=type=bind,source=f.txt,target=/etc/f.txt \\
            touch /scratch/x && cat /run/secrets/s /etc/f.txt > /seen && touch /c/y
    """, {"f.txt": "from-context\n"})
    dest = lamina.dest("unprivileged-mounts")
    argv = _unprivileged_prefix(tmp_path) + [sys.executable, "-m", "lamina.cli", "build", "--context", str(context),
                                             "--insecure-registry", lamina.registry.host, "--destination", dest,
                                             "--secret", f"id=s,src={secret}", "--mount-cache-dir",
                                             str(tmp_path / "mount-cache")]
    run = _run(argv, _lamina_env(lamina)).check()
    assert "sandbox: chroot" in run.output, run.describe()
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    assert image.read("seen") == "s3cr3tfrom-context\n"
    assert image.layer_names(-1) == ["seen"], image.layer_names(-1)
    assert [p.name for p in (tmp_path / "mount-cache").glob("*/y")] == ["y"]


# ---------------------------------------------------------------------------------------------------------------
# rootless: an ordinary user with subordinate ids


@pytest.fixture(scope="session")
def rootless_user() -> str:
    """An ordinary user with subordinate uids and gids (created once per machine)."""
    _require_root()
    require_tool("newuidmap")
    require_tool("newgidmap")
    try:
        pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", ROOTLESS_USER], check=True)
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        text = path.read_text() if path.exists() else ""
        if not any(line.startswith(ROOTLESS_USER + ":") for line in text.splitlines()):
            with path.open("a") as f:
                f.write(f"{ROOTLESS_USER}:{SUBORDINATE}\n")
    return ROOTLESS_USER


def _source_digest() -> str:
    """What the installed lamina is made of: pyproject.toml, README.md and every file under src/."""
    digest = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and ".egg-info" not in str(p))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.fixture(scope="session")
def debian_venv() -> Path:
    """A venv of Debian's python3 with lamina installed, readable by every user. lamina is installed from a copy of
    the checkout, not editable: the test users cannot read a checkout in a 0700 directory (a clone in /root). The
    venv and its dependencies are reused while pyproject.toml does not change; lamina is reinstalled when its
    source does."""
    _require_root()
    _debian_python_with("venv", "python3-venv")
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + str(ROOT).encode()).hexdigest()[:12]
    venv = Path("/var/tmp") / f"lamina-tests-venv-{key}"
    python = venv / "bin" / "python"
    stamp = venv / ".lamina-source"  # the source installed last; absent: a new venv, or an editable one of old
    installed = stamp.read_text() if stamp.exists() else None
    if installed is None:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", str(venv)], check=True, timeout=300)
    source = _source_digest()
    if installed != source:
        with tempfile.TemporaryDirectory(prefix="lamina-install-") as tmp:
            copy = Path(tmp) / "lamina"
            copy.mkdir()
            for name in ("pyproject.toml", "README.md"):
                shutil.copy2(ROOT / name, copy / name)
            shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            again = [] if installed is None else ["--no-deps", "--force-reinstall"]  # the dependencies are there
            pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *again, str(copy)], capture_output=True,
                                 text=True, timeout=600, check=False)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)  # whatever root's umask was
        stamp.write_text(source)
    return python


@pytest.fixture
def user_dir(rootless_user: str) -> Iterator[Path]:
    """A directory the rootless user owns (pytest's tmp_path is root's, mode 700)."""
    entry = pwd.getpwnam(rootless_user)
    path = Path(tempfile.mkdtemp(prefix="lamina-rootless-", dir="/var/tmp"))
    os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_user(user: str, python: Path, argv: list[str], env_extra: dict[str, str]) -> LaminaRun:
    entry = pwd.getpwnam(user)
    env = ["HOME=" + entry.pw_dir, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "USER=" + user]
    env += [f"{k}={v}" for k, v in env_extra.items()]
    full = [require_tool("runuser"), "-u", user, "--", "env", "-i", *env, str(python), "-m", "lamina.cli", *argv]
    return _run(full, dict(os.environ), cwd=Path("/"))


def test_rootless_build_keeps_image_ids(lamina: Lamina, rootless_user: str, debian_venv: Path, user_dir: Path,
                                        tmp_path: Path) -> None:
    entry = pwd.getpwnam(rootless_user)
    context = user_dir / "ctx"
    write_context(context, f"""
        FROM {lamina.images.debian}
        RUN touch /f && chown 1234:1234 /f && id -u > /whoami && useradd -u 1600 svc
        COPY --chown=42:43 file.txt /copied
        RUN test -c /dev/null && test -d /proc/self && hostname > /host
        RUN --network=none --mount=type=tmpfs,target=/t --mount=type=cache,target=/c --mount=type=bind,target=/b \
            touch /t/x /c/y && test -f /b/file.txt && cat /sys/class/net/lo/operstate > /lo-state
        RUN --mount=type=secret,id=s,required wc -c < /run/secrets/s > /secret-size \
            && stat -c '%u %a' /run/secrets/s > /secret-meta
        RUN --mount=type=ssh,required perl -MIO::Socket::UNIX -e '{AGENT_KEYS}' > /ssh-keys
    """, {"file.txt": "x\n", "secret.txt": "s3cr3t"})
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_dir / "key")], check=True)
    docker_config = user_dir / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text("{}")
    work = user_dir / "work"
    for path in (context, context / "Dockerfile", context / "file.txt", context / "secret.txt", docker_config,
                 docker_config / "config.json", user_dir / "key"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    dest = lamina.dest("rootless")
    run = _as_user(rootless_user, debian_venv,
                   ["build", "--context", str(context), "--insecure-registry", lamina.registry.host,
                    "--destination", dest, "--work-dir", str(work), "--cleanup",
                    "--secret", f"id=s,src={context / 'secret.txt'}", "--ssh", f"default={user_dir / 'key'}"],
                   {"DOCKER_CONFIG": str(docker_config)}).check()
    assert "sandbox: rootless" in run.output, run.describe()
    image = unpack(f"docker://{dest}", tmp_path / "unpacked")
    layer = image.layer(-6)
    assert (layer["f"].uid, layer["f"].gid) == (1234, 1234)
    assert image.read("secret-size").strip() == "6" and image.read("secret-meta") == "0 400\n"
    assert image.read("ssh-keys") == "1\n"
    assert image.read("whoami").strip() == "0"
    assert "svc:x:1600" in image.read("etc/passwd")
    copied = image.layer(-5)["copied"]
    assert image.read("lo-state").strip() in ("up", "unknown")
    assert (copied.uid, copied.gid) == (42, 43)
    assert image.read("host").strip() == "lamina"
    assert not work.exists(), "--cleanup leaves the work directory it created"


def test_rootless_refused_without_subordinate_ids(lamina: Lamina, debian_venv: Path, tmp_path: Path) -> None:
    _require_root()
    run = _run([require_tool("runuser"), "-u", "nobody", "--", "env", "-i", "HOME=/nonexistent",
                "PATH=/usr/bin:/bin", str(debian_venv), "-m", "lamina.cli", "build", "--context", "/nonexistent",
                "--no-push", "--sandbox", "rootless"], dict(os.environ), cwd=Path("/"))
    assert run.returncode == 1, run.describe()
    assert "--sandbox rootless" in run.stderr and ("subordinate ids" in run.stderr or "user namespaces" in
                                                     run.stderr), run.describe()


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM in the middle of a RUN


def _processes_with(argv: list[bytes]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline == argv and state != "Z":
            found.append(int(entry.name))
    return found


def _terminate_mid_run(argv: list[str], env: dict[str, str], seconds: str, work: Path, *,
                       via_runuser: bool = False) -> None:
    """Start lamina (``argv``), wait for both ``sleep SECONDS`` of the RUN, SIGTERM lamina (not runuser, which would
    kill its whole session: the child runuser started); then nothing is left."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    target = [b"sleep", seconds.encode()]
    try:
        deadline = time.monotonic() + 120
        while len(_processes_with(target)) < 2:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "the RUN never started"
            time.sleep(0.2)
        sleepers = _processes_with(target)
        if via_runuser:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(children) == 1, children
            os.kill(int(children[0]), signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "terminated by SIGTERM" in output
    time.sleep(0.5)
    assert [pid for pid in sleepers if pid in _processes_with(target)] == [], output
    assert _processes_with(target) == []
    assert str(work) not in Path("/proc/self/mountinfo").read_text()
    assert list(work.iterdir()) == [], list(work.iterdir())


@pytest.mark.parametrize("sandbox", ["namespace", "chroot"])
def test_sigterm_mid_run_leaves_no_mounts_processes_or_work_dir(lamina: Lamina, tmp_path: Path,
                                                                  sandbox: str) -> None:
    _require_root()
    seconds = f"{600 + ['namespace', 'chroot'].index(sandbox)}"
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.busybox}
        RUN sleep {seconds} & sleep {seconds}
    """)
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "lamina.cli", "build", "--context", str(context), "--insecure-registry",
            lamina.registry.host, "--no-push", "--work-dir", str(work), "--sandbox", sandbox]
    _terminate_mid_run(argv, _lamina_env(lamina), seconds, work)


def test_sigterm_mid_rootless_run(lamina: Lamina, rootless_user: str, debian_venv: Path, user_dir: Path) -> None:
    """SIGTERM to the outer lamina reaches the build inside the user namespace, which cleans up there (only root
    of the namespace may delete the files owned by subordinate ids)."""
    entry = pwd.getpwnam(rootless_user)
    context = write_context(user_dir / "ctx", f"""
        FROM {lamina.images.busybox}
        RUN mkdir /owned && chown 4321:4321 /owned && sleep 602 & sleep 602
    """)
    work = user_dir / "work"
    work.mkdir()
    for path in (context, context / "Dockerfile", work):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    argv = [require_tool("runuser"), "-u", rootless_user, "--", "env", "-i", "HOME=" + entry.pw_dir,
            "PATH=/usr/bin:/bin", str(debian_venv), "-m", "lamina.cli", "build", "--context", str(context),
            "--insecure-registry", lamina.registry.host, "--no-push", "--work-dir", str(work)]
    _terminate_mid_run(argv, dict(os.environ), "602", work, via_runuser=True)


def test_chroot_run_leaves_no_process_that_left_its_group(lamina: Lamina, tmp_path: Path) -> None:
    """A RUN that starts a daemon in a session of its own (setsid) escapes the process group the chroot sandbox
    kills; the sandbox still finds it by its root directory (the rootfs) and kills it when the RUN ends."""
    _require_root()
    context = write_context(tmp_path / "ctx", f"""
        FROM {lamina.images.busybox}
        RUN setsid sleep 613 </dev/null >/dev/null 2>&1 & sleep 1; echo started
    """)
    run = lamina.build(context, "--no-push", "--sandbox", "chroot", "--work-dir", str(tmp_path / "work"))
    run.check()
    time.sleep(0.5)
    assert _processes_with([b"sleep", b"613"]) == [], run.describe()
