#!/usr/bin/env bash
# Prints the longest functions under src/ (default: the ten longest) with their line counts,
# from universal-ctags (Debian's universal-ctags: `--fields=+ne` gives each function's first
# and last line). Exits 1 when one is longer than LIMIT lines (default 100), so CI can hold
# the line: docs/contributing.md asks for functions a reader can hold in their head.
#   scripts/longest-functions.sh [N]          LIMIT=120 scripts/longest-functions.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
LIMIT=${LIMIT:-100}
command -v ctags >/dev/null || { echo "longest-functions: ctags not found (apt install universal-ctags)" >&2; exit 2; }
ctags --version | grep -q "Universal Ctags" || { echo "longest-functions: needs universal-ctags" >&2; exit 2; }
ctags -R -x --_xformat='%n %{end} %F %{scope}::%N' --kinds-C++=f --languages=C++ --fields=+ne src |
  sed -E 's/__anon[0-9a-f]+:://g; s/ ::/ /' |
  awk '$2 > 0 { printf "%d %s:%d %s\n", $2 - $1 + 1, $3, $1, $4 }' | sort -rn > /tmp/tern-functions.$$
echo "lines  function (file:line)"
head -n "$N" /tmp/tern-functions.$$ | awk '{ printf "%5d  %s (%s)\n", $1, $3, $2 }'
over=$(awk -v l="$LIMIT" '$1 > l' /tmp/tern-functions.$$ | wc -l)
rm -f /tmp/tern-functions.$$
if [ "$over" -gt 0 ]; then
  echo "$over function(s) longer than $LIMIT lines" >&2
  exit 1
fi
