#!/usr/bin/env bash
# The report in a real browser: a headless Chromium screenshot of report.html (the documented check of
# the report's layout: legend, tables, figures, nothing overlapping). Needs Debian's chromium
# (apt-get install -y chromium); tests/test_report_browser.py runs it and skips without it.
#   bash ci/screenshot.sh results/quick/report.html [out.png] [width,height]
set -euo pipefail
page=${1:?usage: bash ci/screenshot.sh REPORT.html [OUT.png] [WIDTH,HEIGHT]}
out=${2:-${page%.html}.png}
size=${3:-1400,2000}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "ci/screenshot.sh: no chromium: apt-get install -y chromium" >&2
  exit 3
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# no network, no background services: the page is self-contained (figures embedded)
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$(realpath -m "$out")" --window-size="$size" "file://$(realpath "$page")" >/dev/null 2>&1
test -s "$out" && echo "screenshot: $out"
