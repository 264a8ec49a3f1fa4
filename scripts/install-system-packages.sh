#!/usr/bin/env bash
# Installs the Debian packages the tests need: Mosquitto (the MQTT broker the tests
# start), PostgreSQL (tests start throwaway clusters with initdb), VictoriaMetrics (a
# server that speaks the InfluxDB v2 write API) and Chromium
# (the dashboard's browser test drives Debian's build through Playwright; Playwright's
# own browser download is never used).
# Does nothing when they are already there; needs root (or sudo) otherwise.
set -euo pipefail

missing=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # shared state and leases (issue 21)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)  # the zh-CN energy chart's glyphs
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${missing[*]} from Debian's packages" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the services it installs; the tests run their own on free ports.
for service in mosquitto victoria-metrics postgresql; do
  $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
done
