#!/usr/bin/env bash
# The documentation's C++ examples must be exactly the files in examples/,
# which the build compiles and ctest runs: so no page can show code that
# doesn't build. Every ```cpp block of README.md and docs/*.md is a whole
# example file (signatures and fragments go in plain ``` blocks), README.md
# shows at least one, and every example is shown on some page.
# And no paragraph of a page (3 lines or more) may appear twice in it: twice an
# edit that rewrote a section by hand pasted half of the README after itself.
# docs/PERFORMANCE.md is written by the benchmarks, not by hand: not checked.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pages=("$root/README.md")
for page in "$root"/docs/*.md; do
  [ "$(basename "$page")" = PERFORMANCE.md ] || pages+=("$page")
done

status=0
shown=" "
for page in "${pages[@]}"; do
  name=${page#"$root"/}
  rm -f "$work"/block*.cpp
  awk -v dir="$work" '
    /^```cpp$/ { n++; file = dir "/block" n ".cpp"; inside = 1; next }
    /^```$/ && inside { inside = 0; close(file); next }
    inside { print > file }
  ' "$page"
  shopt -s nullglob
  blocks=("$work"/block*.cpp)
  shopt -u nullglob
  if [ "$name" = README.md ] && [ ${#blocks[@]} -eq 0 ]; then
    echo "README.md has no \`\`\`cpp example" >&2
    status=1
  fi
  repeated=$(awk '
    /^$/ { if (lines >= 3 && seen[paragraph]++ == 1) print first; paragraph = ""; lines = 0; next }
    { if (lines == 0) first = $0; paragraph = paragraph "\n" $0; lines++ }
  ' "$page")
  if [ -n "$repeated" ]; then
    echo "$name repeats paragraphs; each first line:" >&2
    printf '%s\n' "$repeated" >&2
    status=1
  fi
  for block in ${blocks[@]+"${blocks[@]}"}; do
    found=no
    for example in "$root"/examples/*.cpp; do
      if cmp -s "$block" "$example"; then found=$(basename "$example"); break; fi
    done
    if [ "$found" = no ]; then
      echo "a cpp block in $name matches no file in examples/ (first line: $(head -1 "$block"))" >&2
      status=1
    else
      echo "$name example = examples/$found"
      shown+="$found "
    fi
  done
done

for example in "$root"/examples/*.cpp; do
  if [[ $shown != *" $(basename "$example") "* ]]; then
    echo "examples/$(basename "$example") is shown on no page (README.md, docs/*.md)" >&2
    status=1
  fi
done
exit $status
