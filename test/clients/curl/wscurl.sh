#!/usr/bin/env bash
# The curl client of the wsegress client matrix (test/clients/run).
#
#   PROXY_URL=http://user:pass@host:port CA_FILE=ca.pem GOCLIENT=bin WORK=dir \
#     wscurl.sh session|fail URL CASE
#
# Debian 12's curl (7.88) has no ws:// support, so this is a raw WebSocket
# handshake over `curl -p` (always a CONNECT tunnel, for http:// and
# https:// alike): the Upgrade headers go on a GET whose "body" is the
# client's masked frames (text, 1 MiB binary, ping, close 1000), built by
# `goclient frames build`. curl treats the 101 as a final response and saves
# everything after it, which `goclient frames check` verifies. URL is the
# target as http:// (for ws://) or https:// (for wss://).
# With an https:// PROXY_URL (TLS to the proxy), PROXY_CA_FILE is given as
# --proxy-cacert, and PROXY_CERT/PROXY_KEY as --proxy-cert/--proxy-key.
# Prints one line per step: "ok STEP detail" or "fail STEP reason".
set -uo pipefail

mode=$1 url=$2 id=$3
: "${PROXY_URL:?}" "${CA_FILE:?}" "${GOCLIENT:?}" "${WORK:?}"
base=$WORK/curl-$id
key=$(head -c 16 /dev/urandom | base64)
proxy_tls=()
[[ -n ${PROXY_CA_FILE:-} ]] && proxy_tls+=(--proxy-cacert "$PROXY_CA_FILE")
[[ -n ${PROXY_CERT:-} ]] && proxy_tls+=(--proxy-cert "$PROXY_CERT" --proxy-key "${PROXY_KEY:?PROXY_KEY goes with PROXY_CERT}")

if ! "$GOCLIENT" frames build -case "$id" -file "$base.frames"; then
	echo "fail connect could not build frames"
	exit 1
fi

# -H 'Content-Type:' and -H 'Expect:' drop what curl would add for a body;
# --http1.1 because a WebSocket upgrade is HTTP/1.1 only.
codes=$(curl -sS -p -x "$PROXY_URL" "${proxy_tls[@]}" --http1.1 --max-time 30 --cacert "$CA_FILE" \
	-X GET --data-binary "@$base.frames" -H 'Content-Type:' -H 'Expect:' \
	-H 'Connection: Upgrade' -H 'Upgrade: websocket' \
	-H 'Sec-WebSocket-Version: 13' -H "Sec-WebSocket-Key: $key" \
	-H 'Sec-WebSocket-Protocol: wsegress-echo' \
	-H 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits' \
	-H 'Origin: http://curl.origin.test' -H "X-Wsegress-Test: curl/$id" \
	-D "$base.headers" -o "$base.out" -w '%{http_connect} %{http_code}' \
	"$url?case=$id" 2>"$base.err")
rc=$?
read -r connect code <<<"$codes"
err=$(tr '\n' ' ' <"$base.err")

if [[ $mode == fail ]]; then
	if [[ $rc -eq 0 && $code == 101 ]]; then
		echo "fail dial-fails handshake succeeded; want a refusal"
		exit 1
	fi
	echo "ok dial-fails status=$connect err=\"curl exit $rc: $err\""
	exit 0
fi
if [[ $connect != 200 ]]; then
	echo "fail connect CONNECT answered $connect (curl exit $rc: $err)"
	exit 1
fi
exec "$GOCLIENT" frames check -case "$id" -file "$base.out" -headers "$base.headers" -key "$key"
