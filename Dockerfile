# The lamina image: the runtime of the GitHub Action (action.yml) and of the GitLab CI template.
# Everything of lamina's own lives under /lamina: a virtual environment (/lamina/bin/lamina) and the entrypoint.
#
#   lamina build --context . --destination ghcr.io/lamina-build/lamina:TAG
#
# Build arguments, for offline builds against a base that already holds the dependencies (the tests):
#   BASE          the Python base image (Debian bookworm with python3)
#   VENV_OPTIONS  extra options of `python3 -m venv` (e.g. "--without-pip --system-site-packages")
#   PIP_OPTIONS   extra options of `pip install` (e.g. "--no-index")
#   PACKAGE       what pip installs (default: the source copied into /src)
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS install
ARG VENV_OPTIONS=""
ARG PIP_OPTIONS=""
ARG PACKAGE=/src
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
# Bytecode checked by hash, not by the source's mtime: a build with SOURCE_DATE_EPOCH clamps the mtimes in the
# layer, which would make every timestamp-based .pyc stale and lamina compile its modules at every start.
RUN python3 -m venv ${VENV_OPTIONS} /lamina \
 && /lamina/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-compile ${PIP_OPTIONS} \
      ${PACKAGE} \
 && /lamina/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /lamina/lib

FROM ${BASE}
LABEL org.opencontainers.image.title="lamina" \
      org.opencontainers.image.description="Daemonless Dockerfile image builder for CI (a Kaniko successor)" \
      org.opencontainers.image.licenses="Apache-2.0"
# git, for ADD from a git repository (the inplace sandbox clones before it clears /, while git is still there), and
# OpenSSH's ssh-agent and ssh-add, which serve the key files of --ssh ID=KEY (started before / is cleared too)
RUN { command -v git && command -v ssh-agent; } >/dev/null || { apt-get update -qq \
      && apt-get install -y -qq --no-install-recommends git openssh-client ca-certificates >/dev/null \
      && rm -rf /var/lib/apt/lists/*; }
# Kaniko's :debug image keeps a static busybox in /busybox: CI jobs written for it run `/busybox/sh` and its tools, and
# the inplace sandbox leaves /busybox alone, so the job's shell still works after a build has replaced /
RUN if command -v busybox >/dev/null; then cp "$(command -v busybox)" /tmp/busybox; \
    else apt-get update -qq && apt-get install -y -qq --no-install-recommends busybox-static >/dev/null \
      && cp /bin/busybox /tmp/busybox && apt-get purge -y -qq busybox-static >/dev/null \
      && rm -rf /var/lib/apt/lists/*; fi \
 && mkdir /busybox && mv /tmp/busybox /busybox/busybox && /busybox/busybox --install -s /busybox
COPY --from=install /lamina /lamina
COPY entrypoint.sh /lamina/entrypoint.sh
# the marker the inplace sandbox looks for: this image's / may be built in, /lamina (and /kaniko) never touched;
# Kaniko's paths, so that a CI job written for gcr.io/kaniko-project/executor:debug runs unchanged on this image:
# /kaniko/executor takes Kaniko's flags, /kaniko/.docker/config.json holds the registry logins
RUN touch /lamina/.lamina-runtime \
 && mkdir -p /kaniko/.docker \
 && printf '#!/busybox/sh\n# the Kaniko executor, as lamina: the same flags\nexec /lamina/bin/lamina build "$@"\n' \
      > /kaniko/executor \
 && chmod 0755 /kaniko/executor
ENV PATH=/lamina/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/kaniko:/busybox \
    DOCKER_CONFIG=/kaniko/.docker \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["/lamina/entrypoint.sh"]
