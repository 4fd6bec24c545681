#!/bin/sh
# expect_error.sh MESSAGE COMMAND...: passes when COMMAND exits with status 1 and its stderr holds MESSAGE.
msg=$1
shift
err=$("$@" 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 1 ] || { echo "expected exit status 1, got $rc: $err"; exit 1; }
case "$err" in
  *"$msg"*) exit 0 ;;
  *) echo "expected an error naming '$msg', got: $err"; exit 1 ;;
esac
