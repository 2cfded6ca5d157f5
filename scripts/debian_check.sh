#!/usr/bin/env bash
# Checks the README's two commands on a stock Debian 12 (bookworm): builds a clean minimal root
# with debootstrap, puts a fresh `git clone` of this repository's committed HEAD in it, and runs,
# as root inside it, exactly the README's commands. Run it as root on a Debian host:
#
#   bash scripts/debian_check.sh > benchmarks/results/debian_setup.txt 2>&1
#   bash scripts/debian_check.sh --keep /var/tmp    # root under /var/tmp/pemn-debian-check.*, kept afterwards
#
# Options: --keep (do not delete the root at the end), PARENT_DIR (where the temporary folder goes;
# default $TMPDIR or /tmp; needs ~3 GB). Takes several minutes: debootstrap, then inside the root
# apt (python3-venv, dataset-fashion-mnist), pip, a 3-epoch quickstart training and the test suite.
#
# What is stock: the root comes from `debootstrap --include=ca-certificates` (default variant),
# from the Debian mirror the host's apt already uses (read from /etc/apt/sources.list{,.d}; set
# DEBIAN_MIRROR to override); /etc/resolv.conf and /etc/hosts are copied in (a chroot shares the
# host's name). Commands run with `chroot ROOT env -i HOME=/root PATH=... bash -lc`.
# The only non-stock things put inside are the package-registry settings this workplace's machines
# (CI included) carry, passed through when the host has them:
#   PIP_FIND_LINKS (its local folders bind-mounted read-only at the same path), PIP_CERT (the host
#   bundle copied to /etc/pip-registry/ in the root; the root's own /etc/ssl stays stock),
#   PIP_DEFAULT_TIMEOUT, PIP_DISABLE_PIP_VERSION_CHECK, /etc/xdg/pip/ and /etc/pip.conf (copied).
# The transcript (stdout) starts with a header: date, machine, Debian version in the root, commit.
# Exit status: 0 when both README commands exit 0.
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
KEEP=0
PARENT=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) PARENT=$1 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "debian_check: run as root (debootstrap, chroot and mount need it)" >&2; exit 2; }

SUITE=bookworm
README_CMD1='bash scripts/setup.sh && .venv/bin/python examples/quickstart.py && .venv/bin/pemn inspect quickstart.pemn'
README_CMD2='bash scripts/setup.sh && .venv/bin/python -m pytest -q'
REPO=$(cd "$(dirname "$0")/.." && pwd)
COMMIT=$(git -C "$REPO" rev-parse HEAD)
SUBJECT=$(git -C "$REPO" log -1 --format=%s "$COMMIT")
[ ${#SUBJECT} -le 100 ] || SUBJECT="${SUBJECT:0:97}..."
INSIDE_REPO=/root/pemn-compress
START=$SECONDS

mkdir -p "$PARENT"
WORK=$(mktemp -d "$(cd "$PARENT" && pwd)/pemn-debian-check.XXXXXX")
ROOT=$WORK/root
LOG=$WORK/prep.log          # verbose output of the preparation (apt, debootstrap, git)
MOUNTS=()
PREP_DONE=0

# Everything mounted under $ROOT, deepest first (from /proc/mounts, so nothing is missed).
mounts_under_root() { awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r; }

cleanup() {
  local rc=$? i m
  set +e
  if [ "$PREP_DONE" -eq 0 ]; then
    exec 1>&3 2>&4
    echo "debian_check: preparation FAILED (exit $rc); last lines of its log ($LOG):"
    tail -n 40 "$LOG" | sed 's/^/  | /'
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -R "${MOUNTS[i]}" 2>/dev/null || umount -lR "${MOUNTS[i]}"
  done
  for m in $(mounts_under_root); do umount -l "$m"; done   # e.g. left by a failed debootstrap
  echo
  if [ -n "$(mounts_under_root)" ]; then
    echo "cleanup: something is still mounted under $ROOT; NOT removing $WORK:"
    mounts_under_root
  elif [ "$KEEP" -eq 1 ]; then
    echo "cleanup: unmounted; root kept (--keep) at $ROOT"
  else
    rm -rf --one-file-system "$WORK" && echo "cleanup: unmounted and removed the root"
  fi
  echo "total time: $((SECONDS - START)) s"
  exit "$rc"
}
exec 3>&1 4>&2
trap cleanup EXIT
trap 'exit 130' INT TERM

# The mirror the host's apt uses for $SUITE (one-line .list and deb822 .sources formats).
host_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      {
        types = uris = suites = ""; enabled = "yes"; key = ""
        for (n = 1; n <= NF; n++) {
          line = $n
          if (line ~ /^#/) continue
          if (line ~ /^[ \t]/ && key != "") { val[key] = val[key] " " line; continue }
          p = index(line, ":"); if (p == 0) continue
          key = tolower(substr(line, 1, p - 1)); val[key] = substr(line, p + 1)
        }
        types = " " val["types"] " "; suites = " " val["suites"] " "; enabled = val["enabled"]
        gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites); gsub(/[ \t]/, "", enabled)
        split(val["uris"], u, /[ \t]+/)
        uri = (u[1] != "") ? u[1] : u[2]
        if (types ~ / deb / && suites ~ (" " s " ") && tolower(enabled) != "no" && uri != "") { print uri; exit }
        delete val
      }' "$f"
  done
}

bind_mount() {  # SRC DST [ro]: recursive bind, slave propagation (unmounting never reaches the host)
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  MOUNTS+=("$2")
  mount --make-rslave "$2"
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# ---------------------------------------------------------------- preparation (verbose output -> $LOG)
exec >"$LOG" 2>&1
NOTES=()
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq debootstrap
  NOTES+=("host: installed debootstrap $(dpkg-query -W -f='${Version}' debootstrap)")
else
  NOTES+=("host: debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '(not from apt)') already present")
fi

MIRROR=${DEBIAN_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$MIRROR" ] || { echo "no '$SUITE' mirror found in /etc/apt/sources.list{,.d}; set DEBIAN_MIRROR"; exit 1; }

t0=$SECONDS
debootstrap --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR"
NOTES+=("debootstrap --include=ca-certificates $SUITE ROOT <the host's apt mirror>: $(chroot "$ROOT" dpkg-query -W | wc -l) packages, $((SECONDS - t0)) s")

git clone --quiet --no-checkout "$REPO" "$ROOT$INSIDE_REPO"
git -C "$ROOT$INSIDE_REPO" checkout --quiet --detach "$COMMIT"
NOTES+=("git clone of this repository, checked out $COMMIT at $INSIDE_REPO")

mkdir -p "$ROOT/proc"
mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc")
bind_mount /sys "$ROOT/sys"
bind_mount /dev "$ROOT/dev"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The root shares the host's name (chroot keeps the UTS namespace) and debootstrap copies /etc/hostname,
# but its /etc/hosts, if any, names only localhost, where an installed Debian also names its host.
# Unresolvable, the host name makes torch.distributed (gloo, the DDP test) wait until it times out.
if [ -f "$ROOT/etc/hosts" ]; then
  root_hosts="its own: $(grep -v '^[[:space:]]*#' "$ROOT/etc/hosts" | grep . | tr -s ' \t' ' ' | tr '\n' ';' | sed 's/;$//' || true)"
else root_hosts="none of its own"; fi
cp -L /etc/hosts "$ROOT/etc/hosts"
NOTES+=("mounted proc, /sys and /dev (rbind, rslave) into the root; copied /etc/resolv.conf")
NOTES+=("copied the host's /etc/hosts, so that the host name resolves as on an installed Debian (root had $root_hosts)")

# Package-registry settings (the only non-stock things inside).
PIPENV=()
REGISTRY=()
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  for link in $PIP_FIND_LINKS; do
    path=${link#file://}
    if [ "${path#/}" != "$path" ] && [ -e "$path" ]; then
      bind_mount "$path" "$ROOT$path" ro
      REGISTRY+=("PIP_FIND_LINKS entry <local wheel folder>: bind-mounted read-only at the same path ($(ls "$path" | wc -l) entries)")
    else
      REGISTRY+=("PIP_FIND_LINKS entry $link: passed as is")
    fi
  done
  PIPENV+=("PIP_FIND_LINKS=$PIP_FIND_LINKS")
fi
if [ -n "${PIP_CERT:-}" ]; then
  if [ -f "$PIP_CERT" ]; then
    mkdir -p "$ROOT/etc/pip-registry"
    cp -L "$PIP_CERT" "$ROOT/etc/pip-registry/$(basename "$PIP_CERT")"
    PIPENV+=("PIP_CERT=/etc/pip-registry/$(basename "$PIP_CERT")")
    REGISTRY+=("PIP_CERT=$PIP_CERT: copied to /etc/pip-registry/$(basename "$PIP_CERT") in the root, PIP_CERT points there")
  else
    PIPENV+=("PIP_CERT=$PIP_CERT")
    REGISTRY+=("PIP_CERT=$PIP_CERT: not a file on the host, passed as is")
  fi
fi
for v in PIP_DEFAULT_TIMEOUT PIP_DISABLE_PIP_VERSION_CHECK; do
  if [ -n "${!v:-}" ]; then PIPENV+=("$v=${!v}"); REGISTRY+=("$v=${!v}: passed"); fi
done
if [ -d /etc/xdg/pip ]; then
  mkdir -p "$ROOT/etc/xdg"
  cp -a /etc/xdg/pip "$ROOT/etc/xdg/pip"
  for f in "$ROOT"/etc/xdg/pip/*; do
    REGISTRY+=("/etc/xdg/pip/$(basename "$f"): copied: $(grep -v '^[[:space:]]*#' "$f" | grep . | tr '\n' ';' | sed 's/;$//')")
  done
fi
if [ -f /etc/pip.conf ]; then
  cp /etc/pip.conf "$ROOT/etc/pip.conf"
  REGISTRY+=("/etc/pip.conf: copied: $(grep -v '^[[:space:]]*#' /etc/pip.conf | grep . | tr '\n' ';' | sed 's/;$//')")
fi
[ ${#REGISTRY[@]} -gt 0 ] || REGISTRY+=("none set on the host: nothing passed")

PREP_DONE=1
exec 1>&3 2>&4

# ---------------------------------------------------------------- transcript
ENV_SHOWN="env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin${PIPENV[*]:+ ${PIPENV[*]}}"
echo "pemn-compress: README commands on a clean stock Debian root (scripts/debian_check.sh)"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:   $(uname -m), $(nproc) CPUs; host Debian $(cat /etc/debian_version)"
echo "root:      Debian $(cat "$ROOT/etc/debian_version") ($SUITE), debootstrap default variant + ca-certificates, from the host's apt mirror"
echo "commit:    $COMMIT ($SUBJECT)"
echo "run as:    chroot ROOT ${ENV_SHOWN//${PIP_FIND_LINKS:-<none>}/<local wheel folder>} bash -lc 'cd $INSIDE_REPO && COMMAND'"
echo "registry settings passed in (the only non-stock things in the root; CI machines have them too):"
printf '  - %s\n' "${REGISTRY[@]}"
echo "preparation:"
printf '  - %s\n' "${NOTES[@]}"
echo

inside() { chroot "$ROOT" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "${PIPENV[@]}" bash -lc "cd $INSIDE_REPO && $1"; }
show() {  # COMMAND: echoed, run inside the root, followed by its exit code
  local rc=0 t0=$SECONDS
  echo "\$ $1"
  inside "$1" 2>&1 || rc=$?
  echo "[exit code $rc, $((SECONDS - t0)) s]"
  echo
  return "$rc"
}

echo "==== the stock root before setup"
show 'command -v python || echo "python: absent"' || true
show 'command -v python3 && python3 --version || echo "python3: absent"' || true
show 'dpkg-query -W -f='"'"'${Package} ${Version}\n'"'"' | grep -i python || echo "no python packages installed"' || true
show 'python3 -m pip install pytest' || true

echo "==== README command 1"
rc1=0; show "$README_CMD1" || rc1=$?
echo "==== README command 2"
rc2=0; show "$README_CMD2" || rc2=$?

echo "==== afterwards"
show 'command -v python || echo "python: absent"' || true
show 'python3 -m pip --version || echo "system pip: absent (everything went into .venv)"' || true
show '.venv/bin/python -c "import sys, torch, pemn_compress; print(sys.version.split()[0], torch.__version__, pemn_compress.__version__)"' || true

echo "==== result: README command 1 exit $rc1, README command 2 exit $rc2"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
