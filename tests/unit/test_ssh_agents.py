"""--ssh: its values, the agents lamina starts for key files (OpenSSH's ssh-agent, real keys), and the socket each
RUN gets, which relays to the agent: owner and mode set, reachable however deep the work directory is, gone after."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from lamina.build.ssh_agents import SOCKET_PATH_MAX, SshAgents, forwarded
from lamina.errors import OptionsError
from lamina.options import parse_ssh

REQUEST_IDENTITIES, IDENTITIES_ANSWER = 11, 12  # the SSH agent protocol (draft-miller-ssh-agent)


def identities(path: Path) -> int:
    """How many keys the agent at ``path`` holds, asked through the agent protocol."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(path))
        conn.sendall(struct.pack(">IB", 1, REQUEST_IDENTITIES))
        header = conn.recv(5, socket.MSG_WAITALL)
        length, kind = struct.unpack(">IB", header)
        body = conn.recv(length - 1, socket.MSG_WAITALL)
        assert kind == IDENTITIES_ANSWER
        return int(struct.unpack(">I", body[:4])[0])


@pytest.fixture
def key(tmp_path: Path) -> Path:
    if shutil.which("ssh-keygen") is None or shutil.which("ssh-agent") is None:
        pytest.fail("OpenSSH's client is missing (apt-get install openssh-client)", pytrace=False)
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.mark.parametrize(("items", "expected"), [
    (["default"], (("default", ()),)),
    (["default=/run/agent.sock"], (("default", ("/run/agent.sock",)),)),
    (["deploy=/k1,/k2", "default"], (("deploy", ("/k1", "/k2")), ("default", ()))),
    (["default,deploy=/k1,/k2"], (("default", ()), ("deploy", ("/k1", "/k2")))),  # LAMINA_SSH, split at commas
    (["a=/x", "a"], (("a", ()),)),  # the last one for an id wins
    (["", " "], ()),
])
def test_parse_ssh(items: list[str], expected: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    assert parse_ssh(items) == expected


@pytest.mark.parametrize(("items", "message"), [(["/k1"], "expected ID"), (["x="], "names no socket")])
def test_parse_ssh_refuses(items: list[str], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        parse_ssh(items)


def test_key_files_are_served_by_an_agent_started_for_the_build(tmp_path: Path, key: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # deeper than a socket path may be
    agents = SshAgents([("deploy", (str(key),))], {}, deep / "ssh")
    agents.start()
    try:
        upstream = agents.upstream("deploy")
        assert upstream is not None and len(str(upstream)) > SOCKET_PATH_MAX and upstream.is_socket()
        run = deep / "run"
        run.mkdir()
        with forwarded(upstream, run / "ssh-1", uid=os.getuid(), gid=os.getgid(), mode=0o600) as relay:
            st = relay.lstat()
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            short = tmp_path / "link.sock"
            os.symlink(relay, short)  # a RUN reaches it by a short name (its mount target)
            assert identities(short) == 1
            assert identities(short) == 1  # a second connection
        assert not os.path.lexists(run / "ssh-1")
        assert agents.upstream("missing") is None
    finally:
        agents.close()
    assert not agents.processes


def test_default_is_the_agent_of_ssh_auth_sock(tmp_path: Path) -> None:
    agents = SshAgents([("default", ())], {"SSH_AUTH_SOCK": "/run/user/agent.sock"}, tmp_path / "ssh")
    agents.start()
    assert agents.upstream("default") == Path("/run/user/agent.sock")
    assert SshAgents([("default", ())], {}, tmp_path / "ssh").upstream("default") is None


def test_a_path_that_is_neither_socket_nor_key_is_refused(tmp_path: Path) -> None:
    agents = SshAgents([("x", (str(tmp_path / "missing"),))], {}, tmp_path / "ssh")
    with pytest.raises(OptionsError, match="neither an agent's socket nor a key file"):
        agents.start()
    agents.close()


def test_key_files_without_openssh_say_what_to_pass_instead(tmp_path: Path, key: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    agents = SshAgents([("deploy", (str(key),))], {}, tmp_path / "ssh")
    with pytest.raises(OptionsError, match=r"needs OpenSSH's ssh-agent .* \(--ssh deploy=SOCKET\)"):
        agents.start()
