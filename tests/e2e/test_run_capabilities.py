"""RUN gets Docker's default capability set, as with BuildKit, in every sandbox that starts the command itself.

BuildKit runs RUN with containerd's default OCI spec (moby/buildkit vendor/github.com/containerd/containerd/v2/
pkg/oci/spec.go, ``defaultUnixCaps``): bounding, permitted and effective sets CHOWN, DAC_OVERRIDE, FSETID, FOWNER,
MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE, i.e.
``00000000a80425fb``; inheritable and ambient empty; a non-root user has none permitted or effective
(frontend/dockerfile/dockerfile_runsecurity_test.go: testRunSecurityDefault, testRunSecuritySandbox). Only
``RUN --security=insecure`` with the ``security.insecure`` entitlement keeps every capability (``WithInsecureSpec``
in util/entitlements/security/security_linux.go).

lamina ran RUN as root with every capability it had itself (CapBnd ``000001fffeffffff`` on a host): a RUN could
mount, renice below 0, load modules... In the chroot sandbox, where nothing is namespaced, that reached the host.
Each case here failed before the fix (a RUN that needs a dropped capability succeeded; the sets were full).
The chroot sandbox has no /proc, so its sets are read with busybox ``setpriv -d`` (capget and PR_CAPBSET_READ).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lamina.sandbox.base import RunSpec
from lamina.sandbox.chroot import ChrootRunner
from lamina.sandbox.namespace import NamespaceRunner
from tests.e2e.conftest import Lamina
from tests.e2e.table_support import Case, F, check_case
from tests.support.baseimages import BUSYBOX_BIN

pytestmark = pytest.mark.e2e

DOCKER_DEFAULT = "00000000a80425fb"
DOCKER_DEFAULT_NAMES = ("chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,"
                        "sys_chroot,mknod,audit_write,setfcap")
ROOT_STATUS = (f"CapInh:\t0000000000000000\nCapPrm:\t{DOCKER_DEFAULT}\nCapEff:\t{DOCKER_DEFAULT}\n"
               f"CapBnd:\t{DOCKER_DEFAULT}\nCapAmb:\t0000000000000000\n")
USER_STATUS = (f"CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
               f"CapBnd:\t{DOCKER_DEFAULT}\nCapAmb:\t0000000000000000\n")
SETPRIV = ("Inheritable capabilities: [none]\nAmbient capabilities: [none]\n"
           f"Capability bounding set: {DOCKER_DEFAULT_NAMES}\n")
SANDBOXES = ("namespace", "chroot")


def _cases(sandbox: str) -> list[Case]:
    args = ("--sandbox", sandbox)
    cases = [
        # setpriv -d needs no /proc: the same check in both sandboxes, as root and as USER nobody
        Case(
            f"{sandbox}-bounding-set-is-docker-default",
            """
            FROM @BUSYBOX@
            RUN setpriv -d | grep -i capabilit > /setpriv-root
            USER nobody
            RUN setpriv -d | grep -i capabilit > /tmp/setpriv-nobody
            """,
            files={"setpriv-root": F(content=SETPRIV), "tmp/setpriv-nobody": F(content=SETPRIV, uid=65534)},
            extra_args=args,
        ),
        # what BuildKit's own tests run (the capabilities Docker keeps still work)
        Case(
            f"{sandbox}-kept-capabilities-work",
            """
            FROM @BUSYBOX@
            RUN touch /f && chown 1234:2345 /f && chmod 4755 /f && chroot / true && echo ok > /ok
            """,
            files={"f": F(uid=1234, gid=2345, mode=0o4755), "ok": F(content="ok\n")},
            extra_args=args,
        ),
        # CAP_SYS_ADMIN is gone (umount only runs if the mount wrongly worked: nothing is left mounted)
        Case(
            f"{sandbox}-mount-is-refused",
            """
            FROM @BUSYBOX@
            RUN mkdir -p /mnt && mount -t tmpfs none /mnt && umount /mnt
            """,
            fails_with=r"mount: permission denied",
            extra_args=args,
        ),
        # CAP_SYS_NICE is gone
        Case(
            f"{sandbox}-negative-nice-is-refused",
            """
            FROM @BUSYBOX@
            RUN renice -n -5 -p $$
            """,
            fails_with=r"setpriority: permission denied",
            extra_args=args,
        ),
    ]
    if sandbox == "namespace":  # /proc is there: the sets as BuildKit's tests read them
        cases.append(Case(
            "namespace-proc-status-as-buildkit",
            f"""
            FROM @BUSYBOX@
            RUN grep Cap /proc/self/status > /caps
            RUN [ "$(cat /proc/self/status | grep CapBnd)" == "CapBnd:\t{DOCKER_DEFAULT}" ]
            RUN --security=sandbox [ "$(cat /proc/self/status | grep CapBnd)" == "CapBnd:\t{DOCKER_DEFAULT}" ]
            USER nobody
            RUN grep Cap /proc/self/status > /tmp/caps
            """,
            files={"caps": F(content=ROOT_STATUS), "tmp/caps": F(content=USER_STATUS, uid=65534)},
            extra_args=args,
        ))
    return cases


CASES = [case for sandbox in SANDBOXES for case in _cases(sandbox)]


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the capability tests run as root (the namespace and chroot sandboxes need it)", pytrace=False)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_run_capabilities(case: Case, lamina: Lamina, tmp_path: Path) -> None:
    _require_root()
    problems = check_case(case, lamina, tmp_path)
    assert not problems, f"{case.name}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# the runners themselves: RunSpec.security


def _busybox_rootfs(root: Path) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for name in ("etc", "mnt", "tmp"):
        (rootfs / name).mkdir()
    shutil.copy2(BUSYBOX_BIN, rootfs / "bin" / "busybox")
    for applet in ("sh", "setpriv", "grep", "mount", "umount"):
        os.symlink("busybox", rootfs / "bin" / applet)
    return rootfs


def _bounding_set() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapBnd in /proc/self/status")


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("security", ["sandbox", "insecure"])
def test_runner_security(sandbox: str, security: str, tmp_path: Path) -> None:
    """``security="insecure"`` (RUN --security=insecure, BuildKit's security.insecure entitlement) keeps the
    capabilities lamina has; ``"sandbox"`` (the default) bounds them to Docker's set."""
    _require_root()
    if not _bounding_set() >> 21 & 1:
        pytest.fail("lamina's tests need CAP_SYS_ADMIN in their bounding set here", pytrace=False)
    rootfs = _busybox_rootfs(tmp_path)
    script = "setpriv -d | grep 'bounding set'; mount -t tmpfs none /mnt && umount /mnt && echo mounted"
    spec = RunSpec(rootfs=rootfs, argv=("/bin/sh", "-c", script),
                   env=("PATH=/bin",), cwd="/", uid=0, gid=0, groups=(), security=security)
    runner = NamespaceRunner() if sandbox == "namespace" else ChrootRunner(warn=lambda _text: None)
    chunks: list[bytes] = []
    status = runner.run(spec, chunks.append)
    output = b"".join(chunks).decode()
    if security == "insecure":
        assert status == 0 and "mounted" in output and "sys_admin" in output, output
    else:
        assert status != 0 and "mounted" not in output, output
        assert f"Capability bounding set: {DOCKER_DEFAULT_NAMES}\n" in output, output
