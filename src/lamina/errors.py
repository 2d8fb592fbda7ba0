"""The one exception tree of lamina.

Every error a user can cause or meet is a ``LaminaError``; its ``str()`` is one line meant for people, and
``exit_code`` is what ``lamina`` exits with. Nothing here ever holds a password or a token.

::

    LaminaError (exit 1)
    ├── OptionsError            bad flags or environment variables (exit 2)
    ├── ContextError            missing context or Dockerfile, COPY source not in the context
    ├── InvalidReference        an image reference that cannot be parsed
    ├── DockerfileError         file:line[:column], the instruction, what is wrong
    │   └── UnsupportedInstruction
    ├── RegistryError           registry, repository, HTTP status, what to do
    │   ├── RegistryUnreachable connection refused, DNS, TLS
    │   ├── AuthError           401 / 403
    │   ├── NotFound            manifest, tag or blob missing (404)
    │   └── DigestMismatch      a blob or manifest did not match its digest
    ├── RootfsError             an archive entry would land outside the rootfs, or cannot be written
    ├── SandboxError            a RUN could not be started
    ├── StepFailed              a RUN exited non-zero (exit code = the command's)
    └── OutputError             writing a tarball, OCI layout or digest file failed
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base of every error lamina reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as it is, whatever the subclass's ``__init__`` takes: the rootless sandbox sends an error from
        the build in its user namespace back to the entry point this way."""
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[LaminaError], args: tuple[object, ...], state: dict[str, object]) -> LaminaError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class OptionsError(LaminaError):
    """A flag or LAMINA_* variable is missing, malformed or contradicts another."""

    exit_code = 2


class ContextError(LaminaError):
    """The build context or the Dockerfile cannot be used."""


class InvalidReference(LaminaError):
    """An image reference (FROM, --destination, --cache-repo) is malformed."""


class DockerfileError(LaminaError):
    """A Dockerfile is malformed; the message starts with ``file:line:column`` (column 1: the instruction)."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int | None = None,
                 column: int | None = None) -> None:
        where = file
        if line is not None:
            column = column or 1  # the instruction's start when nothing more precise is known
            where += f":{line}:{column}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.column = column
        self.detail = message


class UnsupportedInstruction(DockerfileError):
    """A valid instruction this version of lamina does not execute yet."""


class RegistryError(LaminaError):
    """A registry answered with an error, or could not be used."""

    def __init__(self, message: str, *, registry: str = "", repository: str = "", status: int | None = None,
                 hint: str = "") -> None:
        parts = [message]
        where = registry + ("/" + repository if repository else "")
        if where:
            parts.append(f"(registry {where}" + (f", HTTP {status})" if status is not None else ")"))
        elif status is not None:
            parts.append(f"(HTTP {status})")
        text = " ".join(parts)
        if hint:
            text += f": {hint}"
        super().__init__(text)
        self.registry = registry
        self.repository = repository
        self.status = status
        self.hint = hint


class RegistryUnreachable(RegistryError):
    """The registry could not be reached at all (DNS, refused connection, TLS)."""


class AuthError(RegistryError):
    """The registry refused our credentials or has none for us (401/403)."""


class ImmutableTag(RegistryError):
    """A manifest push was refused because the tag exists and the repository does not let tags move."""


class NotFound(RegistryError):
    """A repository, tag, manifest or blob does not exist (404)."""


class DigestMismatch(RegistryError):
    """Content did not match the digest it was fetched by."""


class RootfsError(LaminaError):
    """A layer or copy would write outside the root filesystem, or a file cannot be written."""


class SandboxError(LaminaError):
    """A RUN step could not be started in its sandbox."""


class StepFailed(LaminaError):
    """A RUN command exited non-zero; lamina exits with the same code. The message starts with the instruction's
    ``file:line:1`` when it is known, as a DockerfileError's does; ``detail`` is the message without it."""

    def __init__(self, message: str, *, exit_code: int, output_tail: str = "", file: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(f"{file}:{line}:1: {message}" if file is not None and line is not None else message)
        self.exit_code = exit_code if 0 < exit_code < 256 else 1
        self.output_tail = output_tail
        self.file = file
        self.line = line
        self.detail = message


class OutputError(LaminaError):
    """Writing an output (tarball, OCI layout, digest file) failed."""
