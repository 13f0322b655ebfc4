# board_lib.sh -- sourced by make_board.sh (not run on its own). Builds a Debian bookworm sysroot for
# qemu-user from .debs (dpkg-deb -x: no maintainer scripts run) plus foreign-arch wheels
# (pip --target --platform). Cached and idempotent.
#
# Prints the board's path on stdout (logs go to stderr).
# Caller sets: BOARD_NAME ROOT CACHE DEB_ARCH TRIPLET QEMU DEBS WHEELS NODEPS_WHEELS PIP_PLATFORMS
#              CPUINFO SMOKE_IMPORTS, and HERE REQUIREMENTS NODEPS_REQUIREMENTS (the files WHEELS come from)
# Env knobs:   EDGEFORMER_ARM_FORCE=1 (rebuild even if up to date), EDGEFORMER_ARM_PRINT_INPUTS=1 (print
#              the board's inputs as NAME=value lines and exit: builds nothing), EDGEFORMER_ARM_APT_MAX_AGE_DAYS
#              (refresh the apt lists when older; default 7), PYTHON (host python with pip; python3)
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

HOST_PYTHON=${PYTHON:-python3}
log() { printf '[board %s %s] %s\n' "$BOARD_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

board_main() {
  local want_stamp f files=()
  for f in $REQUIREMENTS $NODEPS_REQUIREMENTS; do files+=("$HERE/$f"); done
  if [ -n "${EDGEFORMER_ARM_PRINT_INPUTS:-}" ]; then
    printf '%s=%s\n' DEB_ARCH "$DEB_ARCH" DEBS "$(echo $DEBS)" REQUIREMENTS "$REQUIREMENTS" \
      NODEPS_REQUIREMENTS "$NODEPS_REQUIREMENTS" WHEELS "$WHEELS" NODEPS_WHEELS "$NODEPS_WHEELS" \
      SMOKE_IMPORTS "$SMOKE_IMPORTS"
    return 0
  fi
  # any change to these scripts, to the requirement files or to the board's inputs rebuilds it
  want_stamp=$({ cat "${BASH_SOURCE[0]}" "$0" "${files[@]}"; printf '%s\n' "$DEB_ARCH" "$DEBS" "$WHEELS" \
               "$NODEPS_WHEELS" "$PIP_PLATFORMS" "$CPUINFO" "$QEMU_CPU_MODEL"; } | sha256sum | cut -c1-16)
  mkdir -p "$CACHE"
  # one builder per board at a time (two test sessions may start together)
  exec 9>"$CACHE/.lock-$BOARD_NAME"
  flock 9
  if [ -z "${EDGEFORMER_ARM_FORCE:-}" ] && [ "$(cat "$ROOT/.board-stamp" 2>/dev/null)" = "$want_stamp" ] \
     && [ -x "$ROOT/usr/bin/python3.11" ]; then
    log "up to date: $ROOT"; echo "$ROOT"; return 0
  fi
  if [ -e "$ROOT" ] && [ ! -f "$ROOT/.board-root" ] && [ -n "$(ls -A "$ROOT" 2>/dev/null)" ]; then
    die "$ROOT exists, is not empty and was not made by this script; refusing to touch it"
  fi
  command -v "$QEMU" >/dev/null || die "$QEMU not found: apt-get install -y qemu-user-static"
  command -v dpkg-deb >/dev/null && command -v apt-get >/dev/null || die "needs apt-get and dpkg-deb (Debian/Ubuntu host)"

  local stage="$ROOT.partial" started=$SECONDS
  rm -rf "$stage"; mkdir -p "$stage"
  touch "$stage/.board-root"
  fetch_and_extract_debs "$stage"
  fix_alternatives "$stage"
  ln -sf python3.11 "$stage/usr/bin/python3"
  # qemu -L redirects every path that exists under ROOT, /proc/cpuinfo included
  mkdir -p "$stage/proc"; printf '%s\n' "$CPUINFO" > "$stage/proc/cpuinfo"
  install_wheels "$stage"
  write_runner "$stage"

  # python derives sys.prefix from its own path, so smoke-test at the final place; roll back on failure
  rm -rf "$ROOT.old"; if [ -e "$ROOT" ]; then mv "$ROOT" "$ROOT.old"; fi
  mv "$stage" "$ROOT"
  log "smoke import: $SMOKE_IMPORTS"
  if ! env -u PYTHONPATH -u PYTHONHOME "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11" -c "
import importlib, platform
for m in '$SMOKE_IMPORTS'.split(): importlib.import_module(m)
print('smoke ok on', platform.machine())" >&2; then
    rm -rf "$ROOT.failed"; mv "$ROOT" "$ROOT.failed"; if [ -e "$ROOT.old" ]; then mv "$ROOT.old" "$ROOT"; fi
    die "smoke import failed; broken tree left in $ROOT.failed"
  fi
  rm -rf "$ROOT.old"
  echo "$want_stamp" > "$ROOT/.board-stamp"
  log "built $ROOT ($(du -sh "$ROOT" | cut -f1)) in $((SECONDS - started)) s"
  echo "$ROOT"   # stdout carries only the board's path
}

# apt-get on a private state dir for a foreign architecture, ignoring the host's apt configuration
APT() { APT_CONFIG="$CACHE/apt-$DEB_ARCH/apt.conf" apt-get -q "$@"; }

setup_apt() {
  local d="$CACHE/apt-$DEB_ARCH"
  mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/empty-archives/partial" "$d/etc/apt.conf.d" \
           "$d/etc/preferences.d" "$d/etc/sources.list.d"
  [ -f "$d/status" ] || : > "$d/status"   # empty dpkg status => apt resolves the full closure
  cat > "$d/etc/sources.list" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOS
  cat > "$d/apt.conf" <<EOS
APT::Architecture "$DEB_ARCH";
APT::Architectures { "$DEB_ARCH"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dir::State "$d";
Dir::State::Lists "$d/lists";
Dir::State::status "$d/status";
Dir::Cache "$d";
Dir::Cache::Archives "$d/archives";
Dir::Etc "$d/etc";
Dir::Etc::SourceList "$d/etc/sources.list";
Dir::Etc::SourceParts "$d/etc/sources.list.d";
Dir::Etc::Parts "$d/etc/apt.conf.d";
Dir::Etc::Preferences "$d/etc/preferences";
Dir::Etc::PreferencesParts "$d/etc/preferences.d";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Dir::Cache::srcpkgcache "";
EOS
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || die "needs the debian-archive-keyring package on the host"
  local max_age=${EDGEFORMER_ARM_APT_MAX_AGE_DAYS:-7} i
  [ -n "$(find "$d/lists/.updated" -mtime -"$max_age" 2>/dev/null)" ] && return 0
  log "apt update ($DEB_ARCH lists)"
  for i in 1 2; do
    APT update >"$d/update.log" 2>&1 && { touch "$d/lists/.updated"; return 0; }
    log "apt update failed (try $i): $(grep '^E:' "$d/update.log" | head -1)"; sleep 3
  done
  # a mirror mid-sync can fail one suite (seen: bookworm-security armhf "unexpected size"):
  # carry on with the lists we have as long as bookworm main is among them
  ls "$d/lists/"*_bookworm_main_binary-"$DEB_ARCH"_Packages* >/dev/null 2>&1 || die "apt update failed: $(cat "$d/update.log")"
  log "WARNING: continuing with partial apt lists"
  touch "$d/lists/.updated"
}

fetch_and_extract_debs() {
  local stage=$1 d="$CACHE/apt-$DEB_ARCH" n=0 f
  setup_apt
  # --print-uris omits packages already cached, so resolve against an empty archives dir;
  # its lines are: 'URL' FILENAME SIZE HASH
  # shellcheck disable=SC2086
  APT -o Dir::Cache::Archives="$d/empty-archives" install --download-only --print-uris -y $DEBS \
    | awk '/^'\''/{print $2}' > "$stage/.board-debs" || die "dependency resolution failed"
  # shellcheck disable=SC2086
  APT install --download-only -y $DEBS >/dev/null || die "deb download failed"
  while read -r f; do
    [ -f "$d/archives/$f" ] || die "missing $f in $d/archives"
    dpkg-deb -x "$d/archives/$f" "$stage"; n=$((n + 1))
  done < "$stage/.board-debs"
  log "extracted $n debs"
}

# dpkg-deb -x runs no maintainer scripts: make the update-alternatives links numpy needs
fix_alternatives() {
  local libdir="$1/usr/lib/$TRIPLET" lib impl
  for lib in libblas.so.3 liblapack.so.3; do
    for impl in openblas-pthread blas lapack atlas; do
      if [ -e "$libdir/$impl/$lib" ]; then ln -sf "$impl/$lib" "$libdir/$lib"; break; fi
    done
  done
}

install_wheels() {
  local stage=$1 wh="$CACHE/wheels-$DEB_ARCH" site="$1/opt/pysite" plat=() p wstamp
  for p in $PIP_PLATFORMS; do plat+=(--platform "$p"); done
  local tags=(--only-binary=:all: "${plat[@]}" --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)
  mkdir -p "$wh"
  wstamp=$(printf '%s\n' "$WHEELS" "$NODEPS_WHEELS" "$PIP_PLATFORMS" | sha256sum | cut -c1-16)
  if [ "$(cat "$wh/.stamp" 2>/dev/null)" != "$wstamp" ]; then
    log "pip download -> $wh"
    # shellcheck disable=SC2086
    [ -z "$WHEELS" ] || "$HOST_PYTHON" -m pip download -q -d "$wh" "${tags[@]}" $WHEELS >"$wh/download.log" 2>&1 \
      || { cat "$wh/download.log" >&2; die "pip download failed"; }
    # shellcheck disable=SC2086
    [ -z "$NODEPS_WHEELS" ] || "$HOST_PYTHON" -m pip download -q --no-deps -d "$wh" "${tags[@]}" $NODEPS_WHEELS >"$wh/download.log" 2>&1 \
      || { cat "$wh/download.log" >&2; die "pip download (no-deps) failed"; }
    echo "$wstamp" > "$wh/.stamp"
  fi
  # offline install from the wheelhouse; the host pip config (find-links, extra indexes) is for x86
  # shellcheck disable=SC2086
  [ -z "$WHEELS" ] || PIP_CONFIG_FILE=/dev/null "$HOST_PYTHON" -m pip install -q --no-index --find-links "$wh" \
      --no-warn-script-location --target "$site" "${tags[@]}" $WHEELS || { rm -f "$wh/.stamp"; die "pip install failed"; }
  # shellcheck disable=SC2086
  [ -z "$NODEPS_WHEELS" ] || PIP_CONFIG_FILE=/dev/null "$HOST_PYTHON" -m pip install -q --no-deps --no-index \
      --find-links "$wh" --no-warn-script-location --target "$site" "${tags[@]}" $NODEPS_WHEELS \
      || { rm -f "$wh/.stamp"; die "pip install (no-deps) failed"; }
  rm -rf "$site/bin"   # console scripts with host shebangs
  # /opt/pysite on sys.path without PYTHONPATH: a .pth in Debian's dist-packages, relative so the board
  # still works when moved
  mkdir -p "$stage/usr/lib/python3/dist-packages"
  echo "../../../../opt/pysite" > "$stage/usr/lib/python3/dist-packages/zz-board-pysite.pth"
  log "installed $(ls "$site" | grep -c '\.dist-info$') wheels"
}

write_runner() {
  cat > "$1/run-python" <<EOS
#!/bin/sh
# Runs this board's python under $QEMU (ARM_QEMU overrides it, QEMU_CPU picks the core model).
# Pass only ARM or pure-python paths in PYTHONPATH (an x86 site-packages would be imported as is).
R=\$(cd "\$(dirname "\$0")" && pwd)
export QEMU_LD_PREFIX="\$R"
export QEMU_CPU="\${QEMU_CPU:-$QEMU_CPU_MODEL}"
exec \${ARM_QEMU:-$QEMU} -L "\$R" "\$R/usr/bin/python3.11" "\$@"
EOS
  chmod +x "$1/run-python"
}
