"""--chmod values as BuildKit reads them (lamina.dockerfile.chmod); symbolic modes as chmod(1) applies them."""

from __future__ import annotations

import pytest

from lamina.dockerfile.chmod import parse_chmod

OCTAL = [("644", 0o644), ("0755", 0o755), ("0", 0), ("0000", 0), ("4755", 0o4755), ("07777", 0o7777)]


@pytest.mark.parametrize(("text", "mode"), OCTAL)
def test_octal_sets_the_mode(text: str, mode: int) -> None:
    chmod = parse_chmod(text)
    assert chmod.apply(0o600, is_dir=False) == mode == chmod.directory_mode


# (mode, start mode, is a directory, result) from GNU chmod with umask 0, and BuildKit's testChmodNonOctal cases
SYMBOLIC = [
    ("go-w", 0o666, False, 0o644), ("go-w", 0o124, True, 0o104),
    ("u=rw,g=r,o=r", 0o666, False, 0o644), ("u=rw,g=r,o=r", 0o124, True, 0o644),
    ("a+X", 0o666, False, 0o666), ("a+X", 0o124, True, 0o135), ("a+X", 0o744, False, 0o755),
    ("u+rw,g+r,o-x,o+w", 0o124, True, 0o766), ("u+x", 0o644, False, 0o744), ("a=rX", 0o700, True, 0o555),
    ("o=u", 0o755, False, 0o757), ("g+s", 0o755, True, 0o2755), ("+t", 0o777, True, 0o1777),
    ("u-s", 0o4755, False, 0o755), ("=r", 0o755, False, 0o444), ("a-rwx,u+rw", 0o777, False, 0o600),
]


@pytest.mark.parametrize(("text", "start", "is_dir", "mode"), SYMBOLIC)
def test_symbolic_modes_apply_to_each_file(text: str, start: int, is_dir: bool, mode: int) -> None:
    chmod = parse_chmod(text)
    assert chmod.apply(start, is_dir=is_dir) == mode
    assert chmod.directory_mode == 0o755  # created parents, as BuildKit's fsutil (no Mode with a ModeStr)


@pytest.mark.parametrize("text", ["64a", "10000", "8", "0999"])
def test_numeric_but_invalid_gets_buildkits_words(text: str) -> None:
    with pytest.raises(ValueError, match=rf"invalid chmod parameter: '{text}'\. it should be octal string and "
                                         r"between 0 and 07777"):
        parse_chmod(text)


@pytest.mark.parametrize("text", ["rwx", "u+q", "u", "x+r", "u+r,,g+w"])
def test_invalid_symbolic_modes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid chmod parameter"):
        parse_chmod(text)
