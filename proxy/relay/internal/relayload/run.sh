#!/bin/bash
# usage: run.sh WSEGRESS-BINARY TAG SCENARIO...   (scenarios: echo churn bulk mixed)
# Runs each scenario through wsegress, a naive io.Copy proxy and directly, the
# proxies pinned to CPU 0 and the load to CPU 1, on 127.0.0.1:9901-9904.
# Needs perf (linux-perf) for the syscall counts.
set -u
BIN=$(realpath "$1"); TAG=$2; shift 2
L=$(mktemp -d)/relayload
go build -o "$L" "$(dirname "$0")" || exit 1
ulimit -n 20000
taskset -c 1 $L -echo 127.0.0.1:9901 & EP=$!
taskset -c 1 $L -echo 127.0.0.1:9904 & EP2=$!
taskset -c 0 $BIN serve --listen 127.0.0.1:9902 --allow 127.0.0.1:9901 --allow 127.0.0.1:9904 --log-level warn --max-tunnels 20000 & WP=$!
taskset -c 0 $L -naive 127.0.0.1:9903 & NP=$!
sleep 1
declare -A PX=([wsegress]=127.0.0.1:9902 [naive]=127.0.0.1:9903)
declare -A PID=([wsegress]=$WP [naive]=$NP)
for sc in "$@"; do
  for p in wsegress naive; do
  case $sc in
    echo) taskset -c 1 $L -mode echo -proxy ${PX[$p]} -pid ${PID[$p]} | sed "s/^/$TAG $p /";;
    churn) taskset -c 1 $L -mode churn -proxy ${PX[$p]} -pid ${PID[$p]} | sed "s/^/$TAG $p /";;
    bulk) for d in up down both; do
          taskset -c 1 $L -mode $d -time 2s -proxy ${PX[$p]} -pid ${PID[$p]} | sed "s/^/$TAG $p /"
          done;;
    mixed) taskset -c 1 $L -mode bulkbg -target 127.0.0.1:9904 -proxy ${PX[$p]} | sed "s/^/$TAG $p /" &
          taskset -c 1 $L -mode paced -proxy ${PX[$p]} -pid ${PID[$p]} -perf=false | sed "s/^/$TAG $p /"; wait %%;;
  esac
  done
  case $sc in
    echo) taskset -c 1 $L -mode echo -perf=false | sed "s/^/$TAG direct /";;
    mixed) taskset -c 1 $L -mode paced -perf=false | sed "s/^/$TAG direct-idle /";;
  esac
done
kill $EP $EP2 $WP $NP
wait 2>/dev/null
