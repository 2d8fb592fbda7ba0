"""``RUN --mount`` checked against BuildKit's own source, behaviour by behaviour.

Each test names where the behaviour comes from in moby/buildkit (read at commit 73ed6825, Aug 2026):

* ``commands_runmount.go``: ``frontend/dockerfile/instructions/commands_runmount.go``, ``parseMount`` (fields read
  in order, keys lower-cased, values not trimmed) and ``setMountState`` / the pre-expansion pass;
* ``convert_runmount.go``: ``frontend/dockerfile/dockerfile2llb/convert_runmount.go``, ``dispatchRunMounts`` and
  ``setCacheUIDGID`` (targets, cache ids, sources, cache directory owner and mode);
* ``convert_secrets.go``: ``frontend/dockerfile/dockerfile2llb/convert_secrets.go``, ``dispatchSecret``;
* ``ops/exec.go``: ``solver/llbsolver/ops/exec.go``, ``loadSecretEnv``;
* ``go-units``: ``vendor/github.com/docker/go-units/size.go``, ``RAMInBytes`` (tmpfs ``size``);
* integration tests in ``frontend/dockerfile/dockerfile_mount_test.go`` and ``dockerfile_secrets_test.go``.

Differences lamina keeps on purpose (or cannot remove in these modules) are strict xfails, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.context import BuildContext
from lamina.build.handlers.run_mounts import RunMounts, parse_run_mounts, prepare_mounts
from lamina.build.state import StageState
from lamina.dockerfile.instructions import Run, load_dockerfile
from lamina.dockerfile.mounts import (
    BindMount,
    CacheMount,
    Mount,
    SecretMount,
    SshMount,
    TmpfsMount,
    check_unexpanded,
    parse_mount,
    parse_size,
)
from lamina.errors import DockerfileError
from lamina.oci.model import Platform


def parsed(value: str, workdir: str = "/") -> Mount:
    return parse_mount(value, workdir)


def refused(value: str, message: str, workdir: str = "/") -> None:
    with pytest.raises(ValueError, match=message):
        parse_mount(value, workdir)


# --- keys, aliases, case, order (commands_runmount.go, parseMount) -------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    # the switch in parseMount: "target", "dst", "destination" / "source", "src" are one key each
    ("target=/t", BindMount("/t")),
    ("dst=/t", BindMount("/t")),
    ("destination=/t", BindMount("/t")),
    ("target=/t,source=a", BindMount("/t", "/a")),
    ("target=/t,src=a", BindMount("/t", "/a")),
    # the last of two aliases wins, as each case overwrites the same field
    ("target=/a,dst=/b", BindMount("/b")),
    ("src=a,source=b,target=/t", BindMount("/t", "/b")),
    ("type=secret,type=cache,target=/c", CacheMount("/c", "/c")),
])
def test_aliases_and_the_last_field_wins(value: str, expected: Mount) -> None:
    assert parsed(value) == expected


def test_keys_type_and_sharing_are_case_insensitive_other_values_are_not() -> None:
    # parseMount: strings.ToLower(key); MountType(strings.ToLower(value)); ShareMode(strings.ToLower(value))
    assert parsed("TYPE=CACHE,TARGET=/c,SHARING=Locked,ID=MyId,FROM=Builder") == CacheMount(
        "/c", "MyId", "locked", from_stage="Builder")


@pytest.mark.parametrize(("value", "message"), [
    # parseMount cuts each CSV field at "=" and lower-cases the key; nothing is trimmed (csvvalue.Fields has
    # TrimLeadingSpace off), so " target" is an unknown key and " cache" an unknown type
    ("type=cache, target=/c", "unexpected key ' target'"),
    ("type= cache,target=/c", "unsupported mount type ' cache'"),
    ("type=cache,target=/c,sharing= locked", "unsupported sharing value ' locked'"),
])
def test_nothing_is_trimmed(value: str, message: str) -> None:
    refused(value, message)


@pytest.mark.parametrize("spelling", ["1", "t", "T", "TRUE", "true", "True"])
def test_true_is_what_go_parsebool_accepts(spelling: str) -> None:
    # parseMount: strconv.ParseBool for ro/readonly/rw/readwrite/required
    assert parsed(f"target=/t,ro={spelling}") == BindMount("/t", readonly=True)
    assert parsed(f"target=/t,rw={spelling}") == BindMount("/t", readonly=False)
    assert parsed(f"type=secret,id=s,required={spelling}") == SecretMount("s", "/run/secrets/s", required=True)


@pytest.mark.parametrize("spelling", ["0", "f", "F", "FALSE", "false", "False"])
def test_false_is_what_go_parsebool_accepts(spelling: str) -> None:
    assert parsed(f"target=/t,readonly={spelling}") == BindMount("/t", readonly=False)
    assert parsed(f"target=/t,readwrite={spelling}") == BindMount("/t", readonly=True)


@pytest.mark.parametrize("spelling", ["tRuE", " true", "true ", "yes", "on", ""])
def test_other_booleans_are_refused(spelling: str) -> None:
    # strconv.ParseBool knows no other spelling: "invalid value for ro: ..."
    refused(f"target=/t,ro={spelling}", "invalid value for ro")


@pytest.mark.parametrize(("value", "expected"), [
    # roAuto: bind and secret read-only, cache and tmpfs writable, unless ro/rw say otherwise
    ("target=/t", BindMount("/t", readonly=True)),
    ("target=/t,rw", BindMount("/t", readonly=False)),
    ("target=/t,rw,ro", BindMount("/t", readonly=True)),  # flags, like fields, in order
    ("type=cache,target=/c", CacheMount("/c", "/c", readonly=False)),
    ("type=cache,target=/c,readonly", CacheMount("/c", "/c", readonly=True)),
    ("type=cache,target=/c,rw=false", CacheMount("/c", "/c", readonly=True)),
])
def test_read_only_defaults(value: str, expected: Mount) -> None:
    assert parsed(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    # parseMount reads the fields in order: "required" and "size" are judged by the type given *before* them
    ("required,type=secret,id=s", "unexpected key 'required' for mount type 'bind'"),
    ("required=true,type=secret,id=s", "unexpected key 'required' for mount type 'bind'"),
    ("size=1m,type=tmpfs,target=/t", "unexpected key 'size' for mount type 'bind'"),
    ("type=tmpfs,size=1m,type=cache,target=/c", None),  # accepted: size came while the type was tmpfs
])
def test_fields_are_read_in_order(value: str, message: str | None) -> None:
    if message is None:
        assert parsed(value) == CacheMount("/c", "/c")
    else:
        refused(value, message)
    assert parsed("type=secret,id=s,required") == SecretMount("s", "/run/secrets/s", required=True)
    assert parsed("type=tmpfs,size=1m,target=/t") == TmpfsMount("/t", 1 << 20)


@pytest.mark.parametrize(("value", "message"), [
    # testMountInvalid (dockerfile_mount_test.go) and parseMount's default case
    ("typ=tmpfs", "unexpected key 'typ' in 'typ=tmpfs'"),
    ("type=tmp", "unsupported mount type 'tmp'"),
    ("target=/t,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("target=/t,type", "invalid field 'type' must be a key=value pair"),
    ("type=cache,,target=/c", "invalid field '' must be a key=value pair"),  # an empty CSV field
])
def test_invalid_fields(value: str, message: str) -> None:
    refused(value, message)


@pytest.mark.parametrize(("value", "expected"), [
    # parseMount stores "env" and "id" for every type; dispatchRunMounts reads Env only for secrets and CacheID only
    # for caches: elsewhere they are ignored, not refused
    ("type=bind,target=/t,env=X", BindMount("/t")),
    ("type=cache,target=/c,env=X", CacheMount("/c", "/c")),
    ("type=tmpfs,target=/t,env=X,id=y", TmpfsMount("/t")),
    ("type=bind,target=/t,id=y", BindMount("/t")),
])
def test_env_and_id_are_ignored_where_unused(value: str, expected: Mount) -> None:
    assert parsed(value) == expected


# --- mode, uid, gid (commands_runmount.go fileInfoAllowed; convert_runmount.go setCacheUIDGID) -------------------

def test_mode_uid_gid_allowed_on_cache_and_secret_only() -> None:
    assert parsed("type=cache,target=/c,mode=0700,uid=1001,gid=1002") == CacheMount(
        "/c", "/c", mode=0o700, uid=1001, gid=1002)
    # testSecretFileParams (dockerfile_secrets_test.go): mode is octal, "741" is 0o741
    assert parsed("type=secret,required=false,mode=741,uid=100,gid=102,target=/mysecret") == SecretMount(
        "mysecret", "/mysecret", mode=0o741, uid=100, gid=102)
    for kind in ("bind", "tmpfs"):
        for key in ("mode", "uid", "gid"):
            refused(f"type={kind},target=/t,{key}=1", f"{key} not allowed for '{kind}' type mounts")


@pytest.mark.parametrize(("value", "message"), [
    # strconv.ParseUint(value, 8|10, 32): no sign, no prefix, no more than 32 bits; checked as the field is read,
    # so a bad value is reported before "not allowed" (the check after the loop)
    ("type=bind,target=/t,mode=x", "invalid value x for mode"),
    ("type=cache,target=/c,mode=0o755", "invalid value 0o755 for mode"),
    ("type=cache,target=/c,mode=8", "invalid value 8 for mode"),
    ("type=cache,target=/c,uid=+1", r"invalid value \+1 for uid"),
    ("type=cache,target=/c,uid=4294967296", "invalid value 4294967296 for uid"),
    ("type=cache,target=/c,gid=", "invalid value  for gid"),
])
def test_bad_numbers(value: str, message: str) -> None:
    refused(value, message)


def test_largest_ids() -> None:
    assert parsed("type=cache,target=/c,uid=4294967295,mode=37777777777") == CacheMount(
        "/c", "/c", uid=2**32 - 1, mode=2**32 - 1)


def test_cache_directory_defaults() -> None:
    # setCacheUIDGID: uid 0, gid 0, mode 0755 unless given (kept as not given: with from= and no source, giving one
    # is what makes BuildKit start the cache empty); testCacheMountUser checks 1001 1002 0751
    assert parsed("type=cache,target=/c") == CacheMount("/c", "/c", mode=None, uid=None, gid=None)
    assert parsed("type=cache,target=/mycache,uid=1001,gid=1002,mode=0751") == CacheMount(
        "/mycache", "/mycache", mode=0o751, uid=1001, gid=1002)


# --- sharing (commands_runmount.go) ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "message"), [
    # the value is checked as the field is read, whatever the type...
    ("type=bind,target=/t,sharing=sometimes", "unsupported sharing value 'sometimes'"),
    # ...then after the loop: secrets first, with their own wording, then any other type but cache
    ("type=secret,id=s,sharing=locked", "secret mount should not define sharing"),
    ("type=bind,target=/t,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=tmpfs,target=/t,sharing=private", "invalid cache sharing set for tmpfs mount"),
])
def test_sharing_errors(value: str, message: str) -> None:
    refused(value, message)


@pytest.mark.parametrize("mode", ["shared", "private", "locked"])
def test_sharing_modes(mode: str) -> None:
    assert parsed(f"type=cache,target=/c,sharing={mode}") == CacheMount("/c", "/c", mode)


# --- targets, sources, cache ids (convert_runmount.go, dispatchRunMounts) -------------------------------------------

@pytest.mark.parametrize(("value", "workdir", "expected"), [
    # a target that is not absolute is joined to the working directory: filepath.Join("/", dir, target)
    ("type=bind,target=src", "/app", BindMount("/app/src")),
    ("type=tmpfs,target=../t", "/app/sub", TmpfsMount("/app/t")),
    # no target at all is the same join with "": the working directory itself
    ("type=bind", "/app", BindMount("/app")),
    ("type=bind,target=", "/app", BindMount("/app")),
    ("type=tmpfs", "/app", TmpfsMount("/app")),
    ("type=cache", "/app", CacheMount("/app", ".")),  # and its id is path.Clean("") = "."
])
def test_targets_relative_to_the_working_directory(value: str, workdir: str, expected: Mount) -> None:
    assert parsed(value, workdir) == expected


@pytest.mark.parametrize(("value", "workdir"), [
    # `if target == "/" { invalid mount target }`, also when no target leaves the working directory /
    ("type=bind,target=/", "/app"),
    ("type=tmpfs,target=..", "/"),
    ("type=bind", "/"),
    ("type=cache", "/"),
])
def test_target_root_is_refused(value: str, workdir: str) -> None:
    refused(value, "invalid mount target", workdir)


@pytest.mark.parametrize(("value", "workdir", "cache_id"), [
    # mount.CacheID = path.Clean(mount.Target): the target as written (not joined to the working directory), cleaned
    ("type=cache,target=/root/.cache", "/", "/root/.cache"),
    ("type=cache,target=/root/.cache/", "/", "/root/.cache"),
    ("type=cache,target=/root//x/../.cache", "/", "/root/.cache"),
    ("type=cache,target=//c", "/", "/c"),
    ("type=cache,target=./c", "/w", "c"),
    ("type=cache,target=c", "/w", "c"),
    ("type=cache,target=/c/,id=given/", "/", "given/"),  # a given id is used as it is
])
def test_cache_id_defaults_to_the_cleaned_target(value: str, workdir: str, cache_id: str) -> None:
    mount = parsed(value, workdir)
    assert isinstance(mount, CacheMount)
    assert mount.id == cache_id


@pytest.mark.parametrize(("value", "expected"), [
    # path.Join("/", mount.Source): the root of the context (or of from) by default, never above it
    ("target=/t", BindMount("/t", "/")),
    ("target=/t,source=.", BindMount("/t", "/")),
    ("target=/t,source=../../etc", BindMount("/t", "/etc")),
    ("target=/t,source=a//b/", BindMount("/t", "/a/b")),
    ("target=/t,from=build,src=out,rw", BindMount("/t", "/out", "build", readonly=False)),  # testMountRWCache
    ("type=cache,target=/c,from=base,source=var/cache", CacheMount("/c", "/c", from_stage="base",
                                                                   source="/var/cache")),
    ("target=/t,from=", BindMount("/t")),  # an empty from is the build context
])
def test_sources(value: str, expected: Mount) -> None:
    assert parsed(value) == expected


# --- tmpfs size (go-units RAMInBytes) --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "size"), [
    ("65536", 65536), ("128m", 128 << 20), ("64MiB", 64 << 20), ("64mb", 64 << 20), ("512kb", 512 << 10),
    ("1.5g", 3 << 29), ("2G", 2 << 30), ("64b", 64), ("64B", 64), ("64 m", 64 << 20), ("1t", 1 << 40),
    ("1p", 1 << 50), ("1e3", 1000), ("1e3k", 1000 << 10), ("+5", 5), ("1.", 1), (".5k", 512), ("0.5", 0),
    ("64 ", 64),
])
def test_size_as_raminbytes_reads_it(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", [
    "", "m", "64ib", "64mi", "64mbb", "64x", " 64m", "64  m", "1.5.2g", "-1", "-1m", "1_000", "64kib ", "0x10",
    "1e400", "1e300p",  # beyond float64 or int64 (Go: a range error; lamina refuses rather than wrapping)
])
def test_sizes_raminbytes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid value for size"):
        parse_size(text)


def test_tmpfs_size_zero_is_no_limit() -> None:
    # llb.TmpfsSize(0): no size option, the kernel's default
    assert parsed("type=tmpfs,target=/t,size=0") == TmpfsMount("/t", None)


# --- secrets (commands_runmount.go; convert_secrets.go, dispatchSecret) ---------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    # id: source, else id, else path.Base(target); target: /run/secrets/ + path.Base(id) unless env is given
    ("type=secret,id=tok", SecretMount("tok", "/run/secrets/tok")),
    ("type=secret,source=tok", SecretMount("tok", "/run/secrets/tok")),
    ("type=secret,src=tok,target=/t", SecretMount("tok", "/t")),
    ("type=secret,target=/root/.npmrc", SecretMount(".npmrc", "/root/.npmrc")),
    ("type=secret,target=/etc/app/token/", SecretMount("token", "/etc/app/token")),
    ("type=secret,id=a/b", SecretMount("a/b", "/run/secrets/b")),
    ("type=secret,id=a/b/", SecretMount("a/b/", "/run/secrets/b")),  # path.Base ignores trailing slashes
    # testSecretAsEnviron / testSecretAsEnvironWithFileMount: env alone is no file, env and target are both
    ("type=secret,id=mysecret,env=SECRET_ENV", SecretMount("mysecret", None, "SECRET_ENV")),
    ("type=secret,id=mysecret,target=/run/secrets/secret,env=SECRET_ENV",
     SecretMount("mysecret", "/run/secrets/secret", "SECRET_ENV")),
    # a relative secret target is not joined to the working directory (dispatchSecret passes it as written)
    ("type=secret,id=s,target=rel", SecretMount("s", "/rel")),
    # the file mode is 0400 unless given, also when only uid or gid is (dispatchSecret; llb AddSecretWithDest)
    ("type=secret,id=s,uid=5", SecretMount("s", "/run/secrets/s", uid=5, mode=0o400)),
    # testSecretRequiredWithoutValue: "required" alone; required=false is optional
    ("type=secret,required,id=mysecret", SecretMount("mysecret", "/run/secrets/mysecret", required=True)),
    ("type=secret,id=s,required=false", SecretMount("s", "/run/secrets/s", required=False)),
    # BuildKit sets the variable named by env whatever the name: only a name that cannot be one is refused here
    ("type=secret,id=s,env=1BAD", SecretMount("s", None, "1BAD")),
    ("type=secret,id=s,env=my-token", SecretMount("s", None, "my-token")),
])
def test_secrets(value: str, expected: SecretMount) -> None:
    assert parsed(value, "/app") == expected


@pytest.mark.parametrize(("value", "message"), [
    ("type=secret", "one of id, source or target is required"),
    ("type=secret,id=a,source=b", "both source and id"),
    ("type=secret,id=a,from=x", "secret mount should not have a from"),
    ("type=secret,id=a,size=1m", "unexpected key 'size' for mount type 'secret'"),
])
def test_secret_errors(value: str, message: str) -> None:
    refused(value, message)


@pytest.mark.xfail(strict=True, reason="lamina refuses env= (an empty name); BuildKit passes it on and the command "
                                       "gets an environment entry '=<value>' (convert_secrets.go, SecretAsEnvName)")
def test_secret_env_empty_name() -> None:
    assert parsed("type=secret,id=s,env=") == SecretMount("s", None, "")


@pytest.mark.parametrize(("value", "expected"), [
    # dispatchSSH: the id defaults to "default", the target to /run/buildkit/ssh_agent.<n> (client/llb/exec.go, None
    # here: the index is the RUN's), mode 0600 when only uid or gid is given, optional unless required
    ("type=ssh", SshMount()),
    ("type=ssh,id=deploy,target=/root/agent.sock,required", SshMount("deploy", "/root/agent.sock", True)),
    ("type=ssh,uid=1000", SshMount(uid=1000)),
    ("type=ssh,mode=0644,gid=5,required=false", SshMount(mode=0o644, gid=5)),
    ("type=ssh,target=relative.sock", SshMount(target="/relative.sock")),
])
def test_ssh_mounts(value: str, expected: SshMount) -> None:
    assert parsed(value, "/work") == expected


@pytest.mark.parametrize(("value", "message"), [
    ("type=ssh,source=/k", "ssh does not support source"),  # dispatchSSH
    ("type=ssh,sharing=locked", "invalid cache sharing set for ssh mount"),  # parseMount's last check
])
def test_ssh_mount_errors(value: str, message: str) -> None:
    refused(value, message)


def test_tmpfs_read_only() -> None:
    # dispatchRunMounts passes llb.Readonly for a tmpfs with ro; writable by default
    assert parsed("type=tmpfs,target=/t,ro") == TmpfsMount("/t", None, True)
    assert parsed("type=tmpfs,target=/t,readonly=false") == TmpfsMount("/t")


# --- the RUN: expansion (commands_runmount.go setMountState; convert.go dispatch) ----------------------------------

def run_of(dockerfile: str) -> tuple[StageState, Run]:
    stage = load_dockerfile(dockerfile).stages[-1]
    state = StageState(stage, Path("/nonexistent-rootfs"), Platform())
    for inst in stage.instructions:
        if isinstance(inst, Run):
            return state, inst
    raise AssertionError("no RUN")


@pytest.mark.parametrize("value", ["from=$stage", "from=${stage}", "from=a$b", '"from=$x"', "FROM=$x"])
def test_from_refuses_variables(value: str) -> None:
    # parseMount's pass before expansion: a "$" anywhere but last in from= (testMountFromError)
    with pytest.raises(ValueError, match="'from' doesn't support variable expansion, define alias stage instead"):
        check_unexpanded(f"type=cache,target=/c,{value}")


@pytest.mark.parametrize("value", ["type=bind,from=stage$,target=/t", "type=bind,target=$T", "type=bind,\"from=a"])
def test_from_without_variables_passes(value: str) -> None:
    check_unexpanded(value)


def test_run_mount_from_a_variable_is_refused_when_the_dockerfile_is_read() -> None:
    # testMountFromError: ENV ttt=test / RUN --mount=from=$ttt,type=cache,target=/tmp ls; BuildKit refuses it while
    # parsing the instructions (no expander yet), so in a stage that is never built too
    with pytest.raises(DockerfileError, match="'from' doesn't support variable expansion") as caught:
        load_dockerfile("FROM busybox AS test\nRUN --mount=from=$ttt,type=cache,target=/tmp ls\nFROM busybox\n")
    assert caught.value.line == 2


def test_run_mount_values_expand_args_and_env() -> None:
    # testMountArg / testMountEnvVar / testMountEnvAcrossStages: type, id, target see ARG and ENV
    state, inst = run_of("FROM busybox\nARG MNT_TYPE=cache\nENV MNT_ID=mycache P=/abc\n"
                         "RUN --mount=type=$MNT_TYPE,id=$MNT_ID,target=$P true\n")
    state.args["MNT_TYPE"] = "cache"
    state.set_env("MNT_ID", "mycache")
    state.set_env("P", "/abc")
    assert parse_run_mounts(state, inst, "\\") == (CacheMount("/abc", "mycache"),)


def test_a_comma_or_equals_in_a_variable_stays_in_its_value() -> None:
    # parseMount splits the CSV fields first, then calls the expander on each value
    state, inst = run_of("FROM busybox\nENV P=/a,b\nRUN --mount=type=cache,target=$P,id=$I true\n")
    state.set_env("P", "/a,b")
    state.set_env("I", "x=y")
    assert parse_run_mounts(state, inst, "\\") == (CacheMount("/a,b", "x=y"),)


def test_keys_and_bare_flags_are_not_expanded() -> None:
    # parseMount: the key is read before the expander runs, a bare flag never reaches it
    state, inst = run_of("FROM busybox\nENV K=target\nRUN --mount=type=cache,$K=/c true\n")
    state.set_env("K", "target")
    with pytest.raises(DockerfileError, match="unexpected key '\\$k'"):
        parse_run_mounts(state, inst, "\\")
    state, inst = run_of("FROM busybox\nENV R=ro\nRUN --mount=type=bind,target=/b,$R true\n")
    state.set_env("R", "ro")
    with pytest.raises(DockerfileError, match="must be a key=value pair"):
        parse_run_mounts(state, inst, "\\")


# --- a missing optional secret (ops/exec.go loadSecretEnv; llbsolver/mounts getSecretMountable) --------------------

def prepared(tmp_path: Path, mounts: tuple[Mount, ...]) -> tuple[RunMounts, list[tuple[str, bytes]]]:
    _, inst = run_of("FROM scratch\nRUN true\n")
    context = tmp_path / "context"
    context.mkdir()
    with prepare_mounts(inst, mounts, context=BuildContext(context, ()), stage_rootfs=lambda _name: None,
                        secrets=(), environ={}, cache_dir=tmp_path / "cache", scratch=tmp_path / "scratch") as ready:
        return ready, [(name, path.read_bytes()) for name, path in ready.secret_env]


def test_missing_optional_secret_sets_its_variable_empty(tmp_path: Path) -> None:
    # loadSecretEnv: a secret not found and optional still appends "NAME=" (its value empty)
    ready, env = prepared(tmp_path, (SecretMount("absent", None, "TOKEN"),))
    assert ready.mounts == ()
    assert env == [("TOKEN", b"")]


def test_missing_optional_secret_file_is_skipped_but_not_its_variable(tmp_path: Path) -> None:
    # getSecretMountable returns no mount for a missing optional secret; the variable is still set (above)
    ready, env = prepared(tmp_path, (SecretMount("absent", "/run/secrets/absent", "TOKEN"),
                                     SecretMount("gone", "/run/secrets/gone")))
    assert ready.mounts == ()
    assert env == [("TOKEN", b"")]


def test_missing_required_secret_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError, match="secret absent is required"):
        prepared(tmp_path, (SecretMount("absent", None, "TOKEN", required=True),))
