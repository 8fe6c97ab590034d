#!/bin/sh
# An external middleware: reads {"ip": "..."} on stdin, answers with a branch and a stored key.
read -r request
case "$request" in
  *'"127.0.0.1"'*) echo '{"branch": "allow", "store": {"reason": "loopback"}}' ;;
  *) echo '{"branch": "deny", "store": {"reason": "not listed"}}' ;;
esac
