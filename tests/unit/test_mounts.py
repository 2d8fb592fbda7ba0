"""``RUN --mount`` values as BuildKit reads them, and ``--secret`` values as ``docker buildx build`` takes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.handlers.run_mounts import mount_cache_location
from lamina.dockerfile.mounts import (
    BindMount,
    CacheMount,
    Mount,
    SecretMount,
    TmpfsMount,
    mount_from,
    parse_mount,
    parse_size,
)
from lamina.errors import OptionsError
from lamina.options import default_mount_cache_dir, parse_secrets

PARSED: list[tuple[str, str, Mount]] = [
    # bind: the default type, read-only unless rw, source defaults to the root of the context or ``from``
    ("target=/src", "/", BindMount("/src")),
    ("type=bind,target=/src", "/", BindMount("/src")),
    ("type=bind,dst=/src,source=sub/dir", "/", BindMount("/src", "/sub/dir")),
    ("type=bind,destination=/src,src=./a/../b", "/", BindMount("/src", "/b")),
    ("type=bind,target=/src,rw", "/", BindMount("/src", readonly=False)),
    ("type=bind,target=/src,readwrite=true", "/", BindMount("/src", readonly=False)),
    ("type=bind,target=/src,rw=false", "/", BindMount("/src", readonly=True)),
    ("type=bind,target=/src,ro=false", "/", BindMount("/src", readonly=False)),
    ("type=bind,target=/src,from=builder,source=/out", "/", BindMount("/src", "/out", "builder")),
    ("type=bind,target=src", "/app", BindMount("/app/src")),  # relative to the working directory
    ("type=bind,target=../x/", "/app/sub", BindMount("/app/x")),
    ("TYPE=Bind,Target=/src", "/", BindMount("/src")),  # keys and the type are case-insensitive
    ('"type=bind","target=/a b"', "/", BindMount("/a b")),  # CSV quoting
    # cache: writable, id defaults to the target as written, 0755 0:0, shared
    ("type=cache,target=/root/.cache", "/", CacheMount("/root/.cache", "/root/.cache")),
    ("type=cache,target=cache", "/w", CacheMount("/w/cache", "cache")),
    ("type=cache,target=/c,id=go,sharing=locked,mode=0700,uid=1000,gid=100", "/",
     CacheMount("/c", "go", "locked", mode=0o700, uid=1000, gid=100)),
    ("type=cache,target=/c,sharing=PRIVATE,ro", "/", CacheMount("/c", "/c", "private", readonly=True)),
    ("type=cache,target=/c,from=base,source=/var/cache", "/", CacheMount("/c", "/c", from_stage="base",
                                                                          source="/var/cache")),
    # tmpfs
    ("type=tmpfs,target=/tmp", "/", TmpfsMount("/tmp")),
    ("type=tmpfs,target=/tmp,size=64m", "/", TmpfsMount("/tmp", 64 << 20)),
    # secret: id from source or the target's basename, target /run/secrets/<id> unless only env, 0400 0:0
    ("type=secret,id=tok", "/", SecretMount("tok", "/run/secrets/tok")),
    ("type=secret,id=aws,target=/root/.aws/credentials", "/", SecretMount("aws", "/root/.aws/credentials")),
    ("type=secret,target=/root/.npmrc", "/", SecretMount(".npmrc", "/root/.npmrc")),
    ("type=secret,source=npm", "/", SecretMount("npm", "/run/secrets/npm")),
    ("type=secret,id=a/b", "/", SecretMount("a/b", "/run/secrets/b")),
    ("type=secret,id=tok,required", "/", SecretMount("tok", "/run/secrets/tok", required=True)),
    ("type=secret,id=tok,required=true,mode=0444,uid=1,gid=2", "/",
     SecretMount("tok", "/run/secrets/tok", required=True, mode=0o444, uid=1, gid=2)),
    ("type=secret,id=tok,env=TOKEN", "/", SecretMount("tok", None, "TOKEN")),
    ("type=secret,id=tok,env=TOKEN,target=/t", "/", SecretMount("tok", "/t", "TOKEN")),
    ("type=secret,id=tok,target=rel", "/app", SecretMount("tok", "/rel")),
]


@pytest.mark.parametrize(("value", "workdir", "expected"), PARSED, ids=[p[0] for p in PARSED])
def test_parse_mount(value: str, workdir: str, expected: Mount) -> None:
    assert parse_mount(value, workdir) == expected


ERRORS = [
    ("type=volume,target=/x", "unsupported mount type 'volume'"),
    ("type=bind", "invalid mount target"),  # no target: the working directory, here /
    ("type=cache", "invalid mount target"),
    ("type=tmpfs,target=/", "invalid mount target"),
    ("type=bind,target=/x,bogus=1", "unexpected key 'bogus'"),
    ("type=bind,target=/x,flag", "must be a key=value pair"),
    ("type=bind,target=/x,mode=0755", "mode not allowed for 'bind'"),
    ("type=tmpfs,target=/x,uid=0", "uid not allowed for 'tmpfs'"),
    ("type=bind,target=/x,gid=0", "gid not allowed"),
    ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("type=cache,target=/x,required=true", "unexpected key 'required'"),
    ("type=bind,target=/x,size=1m", "unexpected key 'size'"),
    ("type=bind,target=/x,sharing=locked", "invalid cache sharing"),
    ("type=cache,target=/x,sharing=sometimes", "unsupported sharing value"),
    ("type=cache,target=/x,mode=0999", "invalid value 0999 for mode"),
    ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
    ("type=cache,target=/x,gid=abc", "invalid value abc for gid"),
    ("type=bind,target=/x,ro=maybe", "invalid value for ro"),
    ("type=tmpfs,target=/x,size=lots", "invalid value for size"),
    ("type=secret", "one of id, source or target is required"),
    ("type=secret,id=a,source=b", "both source and id"),
    ("type=secret,id=a,from=x", "should not have a from"),
    ("type=secret,id=a,sharing=locked", "secret mount should not define sharing"),
    ("type=secret,id=a,env=", "invalid environment variable name"),
    ('type=bind,"target=/x', "failed to parse csv"),
]


@pytest.mark.parametrize(("value", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_parse_mount_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_mount(value)


@pytest.mark.parametrize(("text", "size"), [("65536", 65536), ("64m", 64 << 20), ("64MiB", 64 << 20),
                                            ("512kb", 512 << 10), ("1.5g", 3 << 29), ("2G", 2 << 30)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


SECRETS = [
    (["id=tok,src=/p/tok"], (("tok", "file", "/p/tok"),)),
    (["id=tok,source=f"], (("tok", "file", "f"),)),
    (["id=tok,env=TOKEN"], (("tok", "env", "TOKEN"),)),
    (["type=env,id=tok"], (("tok", "env", "tok"),)),
    (["type=env,id=tok,src=TOKEN"], (("tok", "env", "TOKEN"),)),
    (["type=file,id=tok"], (("tok", "file", "tok"),)),
    (["id=tok"], (("tok", "auto", "tok"),)),
    (["id=a,src=f", "id=b,env=B"], (("a", "file", "f"), ("b", "env", "B"))),
    (["id=a,src=old", "id=a,src=new"], (("a", "file", "new"),)),  # the last one wins
    # LAMINA_SECRET=id=a,src=f,id=b,env=B arrives split at the commas
    (["id=a", "src=f", "id=b", "env=B"], (("a", "file", "f"), ("b", "env", "B"))),
    (["type=env", "id=X", "type=file", "id=Y", "src=p"], (("X", "env", "X"), ("Y", "file", "p"))),
]


@pytest.mark.parametrize(("items", "expected"), SECRETS, ids=[",".join(s[0]) for s in SECRETS])
def test_parse_secrets(items: list[str], expected: tuple[tuple[str, str, str], ...]) -> None:
    assert parse_secrets(items) == expected


@pytest.mark.parametrize(("items", "message"), [
    (["src=/p"], "id=ID is missing"),
    (["id=a,type=socket"], "expected file or env"),
    (["id=a,src=f,env=E"], "not both"),
    (["id=a,path=f"], "unexpected field"),
    (["id=a,id=b"], "given twice"),
])
def test_parse_secrets_errors(items: list[str], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        parse_secrets(items)


def test_default_mount_cache_dir() -> None:
    assert str(default_mount_cache_dir({"XDG_CACHE_HOME": "/xdg", "HOME": "/h"})) == "/xdg/lamina/mounts"
    assert str(default_mount_cache_dir({"HOME": "/h"})) == "/h/.cache/lamina/mounts"
    assert str(default_mount_cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"})) == "/h/.cache/lamina/mounts"


def test_mount_from() -> None:
    assert mount_from("type=bind,from=builder,target=/x") == "builder"
    assert mount_from("type=cache,target=/x") is None
    assert mount_from('type=bind,"from=a') is None


def test_mount_cache_location_stays_on_the_work_directorys_filesystem(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    same = tmp_path / "home" / ".cache" / "lamina" / "mounts"  # not made yet: its nearest ancestor decides
    other = Path("/proc/lamina-no-such-dir/mounts")  # another filesystem
    assert mount_cache_location(same, is_default=True, places_mounts=True, workspace=work) == same
    assert mount_cache_location(other, is_default=True, places_mounts=True, workspace=work) == work / "mount-cache"
    assert mount_cache_location(other, is_default=False, places_mounts=True, workspace=work) == other
    assert mount_cache_location(other, is_default=True, places_mounts=False, workspace=work) == other
