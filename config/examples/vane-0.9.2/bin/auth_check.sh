#!/bin/sh
# A Vane 0.9.2 command plugin: JSON in on stdin, a branch out on stdout.
read -r input
case "$input" in
  *'"token":"letmein"'*) echo '{"branch":"success","store":{"user":"admin"}}' ;;
  *) echo '{"branch":"failure"}' ;;
esac
