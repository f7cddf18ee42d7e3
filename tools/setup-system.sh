#!/usr/bin/env bash
# Installs the Debian packages salad-ray needs, skipping those already present.
#   espeak-ng    CPU text-to-speech (and the phonemizer Kokoro's G2P falls back to)
#   libsndfile1  audio file I/O behind the soundfile package
#   fortunes     offline topical text (categories become domains in the local preset)
#   dict-gcide   offline broad-domain English text (dictionary definitions)
#   chromium, chromium-driver   a headless browser for the tests of the student's page
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
