#!/bin/bash
# The GitHub Action's entrypoint (and the lamina image's): hand over to `lamina ci github`.
# bash, not sh: the runner passes inputs as INPUT_<NAME> with hyphens kept (INPUT_BUILD-ARGS); dash drops such
# variables from the environment of the programs it starts, bash passes them on.
set -euo pipefail
LAMINA="${LAMINA:-/lamina/bin/lamina}"
if [ ! -x "$LAMINA" ]; then
    LAMINA=lamina
fi
if [ "$#" -gt 0 ]; then
    exec "$LAMINA" "$@"
fi
exec "$LAMINA" ci github
