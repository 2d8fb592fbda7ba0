"""Dockerfile heredocs end to end on busybox (RUN scripts, shebang scripts, fd heredocs, COPY inline files)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lamina
from tests.e2e.helpers import LaminaRun, Unpacked, unpack, write_context

pytestmark = pytest.mark.e2e

# Column 0 on purpose: write_context dedents, and the <<- bodies need their tabs.
DOCKERFILE = """\
FROM {base}
ARG GREETING=hello
ENV WHO=world
RUN <<EOF
set -e
mkdir -p /out
echo "script $GREETING $WHO" > /out/script
echo second line >> /out/script
EOF
RUN <<-EOF
\tmkdir -p /out/tabs
\techo "tabs stripped" > /out/tabs/file
\tEOF
RUN <<'EOF'
echo "quoted script $WHO" > /out/quoted-script
EOF
RUN sh <<EOF
echo "interpreter $WHO" > /out/interp
EOF
RUN cat <<A > /out/a && cat <<-B > /out/b
alpha
A
\tbeta
\tB
RUN cat <<'EOF' > /out/quoted
literal $WHO ${{GREETING}}
EOF
RUN cat <<EOF > /out/unquoted
expanded $WHO ${{GREETING}}
EOF
RUN <<EOF
#!/bin/sh
set -e
[ "$(basename "$0")" = EOF ]
echo "shebang $WHO" > /out/shebang
EOF
RUN 3<<EOF cat <&3 > /out/fd3
from fd three
EOF
COPY <<EOF /copied/file.txt
copy "$WHO" '${{GREETING}}'
EOF
COPY --chown=1000:1000 --chmod=600 <<A <<'B' /copied/dir/
a $WHO
A
b $WHO
B
COPY <<-EOF /copied/chomped
\tchomp $WHO
\tEOF
COPY --link <<EOF /linked/
linked $WHO
EOF
"""


@pytest.fixture(scope="module")
def heredocs(lamina: Lamina, tmp_path_factory: pytest.TempPathFactory) -> tuple[LaminaRun, Unpacked]:
    tmp = tmp_path_factory.mktemp("heredocs")
    context = write_context(tmp / "context", DOCKERFILE.format(base=lamina.images.busybox))
    dest = lamina.dest("heredocs")
    run = lamina.build(context, "--destination", dest).check()
    return run, unpack(f"docker://{dest}", tmp / "pulled")


def _image(heredocs: tuple[LaminaRun, Unpacked]) -> Unpacked:
    return heredocs[1]


def test_run_script(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("out/script") == "script hello world\nsecond line\n"


def test_run_script_with_tabs_removed(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("out/tabs/file") == "tabs stripped\n"


def test_quoted_delimiter_of_a_run_script_leaves_expansion_to_the_shell(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    # BuildKit ignores the quoting for a RUN script: the shell runs the body and expands $WHO from the environment.
    assert _image(heredocs).read("out/quoted-script") == "quoted script world\n"


def test_heredoc_fed_to_an_interpreter(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("out/interp") == "interpreter world\n"


def test_two_heredocs_on_one_line(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert image.read("out/a") == "alpha\n"
    assert image.read("out/b") == "beta\n"


def test_quoted_delimiter_is_not_expanded_by_the_shell(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert image.read("out/quoted") == "literal $WHO ${GREETING}\n"
    assert image.read("out/unquoted") == "expanded world hello\n"


def test_shebang_script(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("out/shebang") == "shebang world\n"


def test_file_descriptor_heredoc(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("out/fd3") == "from fd three\n"


def test_copy_heredoc_file(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert image.read("copied/file.txt") == "copy \"world\" 'hello'\n"
    st = image.lstat("copied/file.txt")
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_copy_two_heredocs_into_a_directory_with_owner_and_mode(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert image.read("copied/dir/A") == "a world\n"
    assert image.read("copied/dir/B") == "b $WHO\n"
    for name in ("A", "B"):
        st = image.lstat(f"copied/dir/{name}")
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_copy_chomped_heredoc(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    assert _image(heredocs).read("copied/chomped") == "chomp world\n"


def test_copy_link_heredoc(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert image.read("linked/EOF") == "linked world\n"
    assert image.layer_names(-1) == ["linked", "linked/EOF"]


def test_no_trace_of_the_script_directory(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    image = _image(heredocs)
    assert not [p.name for p in Path(image.rootfs).iterdir() if p.name.startswith(".lamina-heredoc")]
    for index in range(1, len(image.manifest["layers"])):
        assert not [n for n in image.layer_names(index) if "lamina-heredoc" in n]
        # / is not in any layer: its mtime was given back after the script directory went away
        assert "" not in image.layer_names(index) and "." not in image.layer_names(index)


def test_history_holds_the_scripts(heredocs: tuple[LaminaRun, Unpacked]) -> None:
    history: list[dict[str, Any]] = _image(heredocs).config["history"]
    runs = [h["created_by"] for h in history if h["created_by"].startswith("RUN ")]
    assert runs[0] == ("RUN |1 GREETING=hello /bin/sh -c set -e\nmkdir -p /out\necho \"script $GREETING $WHO\" > "
                       "/out/script\necho second line >> /out/script\n # buildkit")
    assert runs[4] == "RUN |1 GREETING=hello /bin/sh -c cat <<A > /out/a && cat <<-B > /out/b\nalpha\nA\n\tbeta\nB # buildkit"
    assert runs[7] == "RUN |1 GREETING=hello /bin/sh -c /dev/pipes/EOF # buildkit"
