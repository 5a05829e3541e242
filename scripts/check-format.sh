#!/usr/bin/env bash
# Checks that every C++ file in the repository is formatted as .clang-format says (Debian's
# clang-format 14; CI runs this as the ctest `code_format`). Prints the files that differ and
# exits 1; --fix rewrites them in place instead.
#   scripts/check-format.sh          # check
#   scripts/check-format.sh --fix    # apply
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format not found (apt install clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files -- '*.cc' '*.h' | grep -v '^third_party/' || true)
[ ${#files[@]} -eq 0 ] && { echo "check-format: no C++ files (not a git checkout?)" >&2; exit 2; }
if [ "${1:-}" = "--fix" ]; then
  clang-format -i --style=file "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  if ! clang-format --style=file --dry-run -Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done
if [ ${#bad[@]} -gt 0 ]; then
  printf '%s\n' "${bad[@]}"
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from .clang-format (scripts/check-format.sh --fix)" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
