#!/usr/bin/env bash
# clang-format over the C++/CUDA sources in native/ (.clang-format), except the files listed in
# .clang-format-ignore (not yet formatted; scripts/format-all.sh formats them once and deletes
# that list).
#   scripts/format-cpp.sh           formats in place
#   scripts/format-cpp.sh --check   fails, listing the files, when one would change
# Without clang-format on PATH it says so and does nothing (exit 0): apt-get install clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-write}

if ! command -v clang-format >/dev/null 2>&1; then
  echo "C++ format check skipped: clang-format not found (apt-get install clang-format)"
  exit 0
fi

ignored() {
  [ -f .clang-format-ignore ] && grep -vE '^\s*(#|$)' .clang-format-ignore | grep -qxF "$1"
}

files=()
while IFS= read -r f; do
  ignored "$f" || files+=("$f")
done < <(find native -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)

if [ ${#files[@]} -eq 0 ]; then exit 0; fi
if [ "$mode" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "C++ files not formatted (run npm run format):"
    printf '  %s\n' "${bad[@]}"
    exit 1
  fi
  echo "C++ format check: ${#files[@]} files formatted"
else
  clang-format -i "${files[@]}"
fi
