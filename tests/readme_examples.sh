#!/usr/bin/env bash
# The README's C++ examples must be exactly the files in examples/, which the
# build compiles and ctest runs: so the README can't show code that doesn't build.
# And no paragraph of it (3 lines or more) may appear twice: twice an edit
# that rewrote a section by hand pasted half of the README after itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
awk -v dir="$work" '
  /^```cpp$/ { n++; file = dir "/block" n ".cpp"; inside = 1; next }
  /^```$/ && inside { inside = 0; close(file); next }
  inside { print > file }
' "$root/README.md"
shopt -s nullglob
blocks=("$work"/block*.cpp)
if [ ${#blocks[@]} -eq 0 ]; then
  echo "README.md has no \`\`\`cpp example" >&2
  exit 1
fi
status=0
repeated=$(awk '
  /^$/ { if (lines >= 3 && seen[paragraph]++ == 1) print first; paragraph = ""; lines = 0; next }
  { if (lines == 0) first = $0; paragraph = paragraph "\n" $0; lines++ }
' "$root/README.md")
if [ -n "$repeated" ]; then
  echo "README.md repeats paragraphs; each first line:" >&2
  printf '%s\n' "$repeated" >&2
  status=1
fi
for block in "${blocks[@]}"; do
  found=no
  for example in "$root"/examples/*.cpp; do
    if cmp -s "$block" "$example"; then found=$(basename "$example"); break; fi
  done
  if [ "$found" = no ]; then
    echo "a cpp block in README.md matches no file in examples/ (first line: $(head -1 "$block"))" >&2
    status=1
  else
    echo "README example = examples/$found"
  fi
done
exit $status
