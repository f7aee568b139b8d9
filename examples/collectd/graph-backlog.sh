#!/bin/sh
# Draws a consumer's backlog as collectd recorded it (rrdtool plugin), like Fedora's
# fedmsg graphs. Usage: graph-backlog.sh CONSUMER [HOST] [RRD_DIR] [OUT.png] [START]
# e.g. graph-backlog.sh FMNConsumer busgateway01 /var/lib/collectd/rrd fmn-backlog.png -1d
set -eu
consumer=${1:?usage: graph-backlog.sh CONSUMER [HOST] [RRD_DIR] [OUT.png] [START]}
host=${2:-$(hostname -f)}
rrd_dir=${3:-/var/lib/collectd/rrd}
out=${4:-${consumer}-backlog.png}
start=${5:--1d}
rrd="$rrd_dir/$host/fedmsg-hub/queue_length-${consumer}_backlog.rrd"
[ -f "$rrd" ] || { echo "no such file: $rrd (is collectd's rrdtool plugin loaded?)" >&2; exit 1; }
rrdtool graph "$out" --start "$start" --width 800 --height 200 \
  --title "$consumer backlog on $host" --vertical-label messages --lower-limit 0 \
  "DEF:backlog=$rrd:value:AVERAGE" \
  "DEF:peak=$rrd:value:MAX" \
  "AREA:backlog#3465a4:backlog" \
  "LINE1:peak#cc0000:peak" \
  "GPRINT:backlog:LAST:now %.0lf" \
  "GPRINT:peak:MAX:max %.0lf"
echo "$out"
