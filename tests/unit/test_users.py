"""USER and --chown resolution against an image's /etc/passwd and /etc/group, as BuildKit does it."""

from __future__ import annotations

import pytest

from lamina.sandbox.users import UnknownUser, UserDB, resolve_owner, resolve_user

DB = UserDB(
    passwd="root:x:0:0:root:/root:/bin/sh\napp:x:1234:1500:App:/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    group="root:x:0:\nstaff:x:50:app\napps:x:1500:\nnogroup:x:65534:\n",
)
EMPTY = UserDB(passwd="", group="")


def test_user_by_name_gets_primary_and_supplementary_groups() -> None:
    user = resolve_user("app", DB)
    assert (user.uid, user.gid, user.groups, user.home) == (1234, 1500, (1500, 50), "/home/app")


def test_user_with_group_has_only_that_group() -> None:
    user = resolve_user("app:staff", DB)
    assert (user.uid, user.gid, user.groups) == (1234, 50, (50,))


def test_numeric_user_needs_no_entry() -> None:
    user = resolve_user("4242:4343", DB)
    assert (user.uid, user.gid, user.home) == (4242, 4343, "/")


def test_default_root_without_passwd_runs_as_zero() -> None:
    user = resolve_user("", EMPTY)
    assert (user.uid, user.gid) == (0, 0)
    assert resolve_user("root", EMPTY).uid == 0


def test_unknown_names_are_errors() -> None:
    with pytest.raises(UnknownUser, match="unable to find user ghost"):
        resolve_user("ghost", DB)
    with pytest.raises(UnknownUser, match="unable to find group ghosts"):
        resolve_user("app:ghosts", DB)


@pytest.mark.parametrize(("spec", "owner"), [
    ("app", (1234, 1500)),  # a name alone: the user's primary group (BuildKit), not gid = uid
    ("app:staff", (1234, 50)),
    ("1234", (1234, 1234)),  # a numeric uid alone doubles as the gid
    ("1234:7", (1234, 7)),
    ("nobody:nogroup", (65534, 65534)),
])
def test_chown_owner(spec: str, owner: tuple[int, int]) -> None:
    assert resolve_owner(spec, DB) == owner
