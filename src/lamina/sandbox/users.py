"""Users and groups as Docker resolves them: ``USER name|uid[:group|gid]`` against the image's /etc/passwd and
/etc/group. ``resolve_user`` is pure; ``read_user_db`` reads the two files from a rootfs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lamina.rootfs.paths import resolve_in_root


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, gid first as Docker does
    home: str


@dataclass(frozen=True)
class UserDB:
    passwd: str
    group: str


class UnknownUser(ValueError):
    """The USER names a user or group the image does not have."""


def read_user_db(rootfs: Path) -> UserDB:
    def read(name: str) -> str:
        try:
            return resolve_in_root(rootfs, f"/etc/{name}").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    return UserDB(read("passwd"), read("group"))


def _entries(text: str, fields: int) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            out.append(parts)
    return out


def resolve_user(spec: str, db: UserDB) -> ResolvedUser:
    """Resolve ``user[:group]``; numeric ids need no entry, names must exist (UnknownUser otherwise)."""
    user, _, group = (spec or "root").partition(":")
    if user == "root" and not group and not any(p[0] == "root" for p in _entries(db.passwd, 7)):
        user = "0"  # no USER given, or an image without /etc/passwd: BuildKit runs as 0:0 without a lookup
    passwd = _entries(db.passwd, 7)
    groups = _entries(db.group, 4)
    home = "/"
    if user.isdigit():
        uid = int(user)
        entry = next((p for p in passwd if p[2] == user), None)
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
        if entry:
            home = entry[5] or "/"
        name = entry[0] if entry else None
    else:
        entry = next((p for p in passwd if p[0] == user), None)
        if entry is None:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid, home, name = int(entry[2]), int(entry[3]), entry[5] or "/", user
    if group:
        gid = _group_id(group, groups)
    supplementary = [gid]
    if name is not None and not group:
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) not in supplementary:
                supplementary.append(int(g[2]))
    return ResolvedUser(uid, gid, tuple(supplementary), home)


def _group_id(group: str, groups: list[list[str]]) -> int:
    """A group given by number, or by name in /etc/group."""
    if group.isdigit():
        return int(group)
    entry = next((g for g in groups if g[0] == group), None)
    if entry is None:
        raise UnknownUser(f"unable to find group {group}: no matching entries in group file")
    return int(entry[2])


def resolve_owner(spec: str, db: UserDB) -> tuple[int, int]:
    """``--chown=user[:group]`` as BuildKit resolves it: a name alone takes the user's primary group from
    /etc/passwd; a numeric uid alone doubles as the gid (BuildKit, file/user_linux.go ``readUser``)."""
    user, sep, group = spec.partition(":")
    passwd = _entries(db.passwd, 7)
    groups = _entries(db.group, 4)
    if user.isdigit():
        uid = int(user)
        gid = uid
    else:
        entry = next((p for p in passwd if p[0] == user), None)
        if entry is None:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
        uid = int(entry[2])
        gid = int(entry[3]) if entry[3].isdigit() else uid
    if sep and group:
        gid = _group_id(group, groups)
    return uid, gid
