#!/bin/sh
# Prints a greeting that records where and as whom the RUN step ran.
echo "${GREETING:-Hello} (built as uid $(id -u) in $(pwd) on $(uname -m))"
