#!/bin/sh
# A CGI program: headers, a blank line, then the body.
printf 'Content-Type: text/plain\n\n'
printf 'hello %s from %s\n' "$PATH_INFO" "$REMOTE_ADDR"
