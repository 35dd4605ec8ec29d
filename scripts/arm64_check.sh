#!/usr/bin/env bash
# The arm64 check: run edgedet detect, validate and bench in an arm64 Debian bookworm root (the base
# of Raspberry Pi OS) under qemu-user-static, with the wheel built from this checkout and
# `edgedet[device]` from PyPI's aarch64 wheels; validate the same files on this machine; merge the
# two reports into one (AP and ΔAP per architecture side by side).
#
# Run by hand, as root, on an x86-64 Debian/Ubuntu machine (not in CI):
#   apt-get install qemu-user-static binfmt-support debootstrap
#   sudo scripts/arm64_check.sh [-r ROOT] [-c CPU] [-s SPLIT] [-l LIMIT] OUT DATA FP32.tflite MODEL.tflite...
#
#   OUT    folder for the reports: OUT/arm64, OUT/x86_64, OUT/merged, and OUT/arm64.log
#   DATA   dataset (COCO .json or folder, VOC folder, YOLO .yaml); copied into the root
#   FP32   the float baseline file; MODEL... the files to compare with it (int8, fp16, ...)
#   -r     where the arm64 root lives (default /var/tmp/edgedet-arm64; reused when present)
#   -c     the Arm CPU qemu emulates: cortex-a76 (default, the Raspberry Pi 5's) or cortex-a72 (the Pi 4's);
#          the root gets an Arm view of that CPU for XNNPACK (qemu's "max" has no such view and no Pi
#          has its i8mm/SVE/SME, so it is not offered)
#   -s     split to validate on (default test); -l: only the first N images (default 20)
#   EDGEDET  the command for this machine's side (default: edgedet); it needs edgedet[device]
#
# Accuracy from the arm64 side is real (the same XNNPACK arm64 kernels a Raspberry Pi runs, within
# what qemu emulates); its timings are qemu's and mean nothing. Latency comes only from a board.
set -eEuo pipefail
STEP="arguments"
# Any failing command stops the script with the line, the step and the command (once: the copy of
# this trap in a $(...) subshell stays quiet, the parent reports).
on_err() {
  local rc=$? line=$1
  [ "$BASH_SUBSHELL" -eq 0 ] || return 0
  echo "arm64_check: failed (exit $rc) at line $line, step: $STEP: $BASH_COMMAND" >&2
}
trap 'on_err $LINENO' ERR

usage() { sed -n '2,/^set -eEuo/p' "$0" | sed '$d'; }
ROOT=/var/tmp/edgedet-arm64
CPU=cortex-a76
SPLIT=test
LIMIT=20
MIRROR=${MIRROR:-http://deb.debian.org/debian}
EDGEDET=${EDGEDET:-edgedet}
while getopts "r:c:s:l:h" opt; do
  case $opt in
    r) ROOT=$OPTARG ;;
    c) CPU=$OPTARG ;;
    s) SPLIT=$OPTARG ;;
    l) LIMIT=$OPTARG ;;
    *) usage; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 4 ]; then usage; exit 2; fi
OUT=$(realpath -m "$1"); DATA=$(realpath "$2"); shift 2
MODELS=()
for m in "$@"; do MODELS+=("$(realpath "$m")"); done
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "arm64_check: $*" >&2; exit 1; }
STEP="checks"
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
for tool in debootstrap qemu-aarch64-static update-binfmts; do
  command -v "$tool" >/dev/null || die "$tool missing: apt-get install qemu-user-static binfmt-support debootstrap"
done
case $CPU in cortex-a76|cortex-a72) ;; *) die "-c $CPU: no Arm CPU view for it (use cortex-a76 or cortex-a72)" ;; esac
[ -e "$DATA" ] || die "$DATA: no such dataset"
for m in "${MODELS[@]}"; do [ -f "$m" ] || die "$m: no such model file"; done

# Arm binaries run through qemu via binfmt_misc; without it nothing inside the root can start.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  update-binfmts --enable qemu-aarch64 || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "binfmt_misc has no qemu-aarch64 entry (update-binfmts --enable qemu-aarch64 failed)"

STEP="arm64 root"
if [ ! -x "$ROOT/usr/bin/python3" ]; then
  echo "== debootstrap arm64 bookworm into $ROOT (20-40 min under qemu)"
  debootstrap --arch=arm64 --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$MIRROR"
fi
cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"   # for binfmt entries without the F flag
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"     # pip reaches PyPI from inside
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$ROOT/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
fi

MOUNTS=()
cleanup() { for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done; }
trap cleanup EXIT
for fs in proc dev; do
  mountpoint -q "$ROOT/$fs" || { mount --bind "/$fs" "$ROOT/$fs" && MOUNTS+=("$ROOT/$fs"); }
done
# XNNPACK finds its kernels through the cpuinfo library, which reads /sys/devices/system/cpu and
# /proc/cpuinfo. The host's x86 versions crash it under qemu (SIGSEGV in allocate_tensors); with
# neither it fails and LiteRT silently runs without XNNPACK. So the root sees an Arm view of the
# emulated CPU: four cores with the Raspberry Pi's CPU identification and features.
case $CPU in
  cortex-a76) PART=0xd0b; VARIANT=0x4; REV=1; BOARD="Raspberry Pi 5 CPU"
              FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  cortex-a72) PART=0xd08; VARIANT=0x0; REV=3; BOARD="Raspberry Pi 4 CPU"; FEATURES="fp asimd evtstrm crc32 cpuid" ;;
  *) die "-c $CPU: no Arm CPU view for it (use cortex-a76 or cortex-a72)" ;;
esac
VIEW=$ROOT/var/tmp/edgedet-cpu-view
rm -rf "$VIEW" && mkdir -p "$VIEW/cpu" "$ROOT/sys/devices/system/cpu"
echo 0-3 > "$VIEW/cpu/possible"; echo 0-3 > "$VIEW/cpu/present"; echo 0-3 > "$VIEW/cpu/online"
for i in 0 1 2 3; do
  mkdir -p "$VIEW/cpu/cpu$i"
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
    "$i" "$FEATURES" "$VARIANT" "$PART" "$REV" >> "$VIEW/cpuinfo"
done
printf 'Model\t: qemu-user %s (%s) on %s\n' "$CPU" "$BOARD" "$(uname -m)" >> "$VIEW/cpuinfo"
mount --bind "$VIEW/cpu" "$ROOT/sys/devices/system/cpu" && MOUNTS+=("$ROOT/sys/devices/system/cpu")
mount --bind "$VIEW/cpuinfo" "$ROOT/proc/cpuinfo" && MOUNTS+=("$ROOT/proc/cpuinfo")

WORK=/opt/edgedet-check
STEP="wheel and copies"
# The venv is kept between runs (pip under qemu is slow); everything else is copied afresh.
rm -rf "$ROOT$WORK"/{dist,data,models,report-arm64} && mkdir -p "$ROOT$WORK/models" "$OUT"
echo "== wheel from $REPO"
python3 -m pip wheel -q --no-deps -w "$ROOT$WORK/dist" "$REPO"
WHEEL=$(basename "$(ls "$ROOT$WORK"/dist/edgedet-*.whl)")
# The dataset and models go into the root; the same copies are validated on both sides.
if [ -d "$DATA" ]; then cp -rL "$DATA" "$ROOT$WORK/data"; DATA_IN=$WORK/data
else cp -rL "$(dirname "$DATA")" "$ROOT$WORK/data"; DATA_IN=$WORK/data/$(basename "$DATA"); fi
NAMES=()
for m in "${MODELS[@]}"; do
  sub=$(basename "$(dirname "$m")"); mkdir -p "$ROOT$WORK/models/$sub"
  cp "$m" "$ROOT$WORK/models/$sub/"; NAMES+=("$WORK/models/$sub/$(basename "$m")")
done
# sed reads to the end (head would close the pipe early: sort dies of SIGPIPE, and pipefail stops the script)
IMAGE=$(find "$ROOT$WORK/data" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | sed -n 1p)
[ -n "$IMAGE" ] || die "$DATA: no .jpg/.jpeg/.png image in it"
IMAGE=${IMAGE#"$ROOT"}

in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/edgedet-check/venv/bin:/usr/bin:/bin LANG=C.UTF-8 \
    QEMU_CPU="$CPU" "$@"
}
# edgedet exit 1 = a threshold missed (the report is written); anything else is a failure.
allow_missed() { local rc=0; "$@" || rc=$?; [ "$rc" -le 1 ] || return "$rc"; }
# The arm64 side runs in this shell (not in a pipeline), so set -e and the ERR trap see every step;
# tee copies its output into OUT/arm64.log.
{
  STEP="arm64 side: install (log: $OUT/arm64.log)"
  echo "== arm64 root: $(in_root uname -m), $(in_root python3 --version), qemu CPU $CPU"
  [ -x "$ROOT$WORK/venv/bin/python3" ] || in_root python3 -m venv "$WORK/venv"
  in_root pip install -q --disable-pip-version-check "$WORK/dist/$WHEEL[device]"
  in_root pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WORK/dist/$WHEEL"
  in_root python3 -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('tensorflow', 'tf_keras')))" \
    || die "TensorFlow got installed by edgedet[device]"
  in_root pip list --format=freeze | grep -iE '^(edgedet|ai-edge-litert|numpy|pillow|pycocotools|matplotlib|pyyaml)=='
  # --verbose keeps LiteRT's "Created TensorFlow Lite XNNPACK delegate for CPU." lines: the
  # evidence that XNNPACK ran (the CLI hides toolchain log lines without it).
  echo "== detect"
  STEP="arm64 side: detect (log: $OUT/arm64.log)"
  in_root edgedet --verbose detect --model "${NAMES[1]}" "$IMAGE" --score 0.3
  echo "== validate (arm64)"
  STEP="arm64 side: validate (log: $OUT/arm64.log)"
  allow_missed in_root edgedet --verbose validate --baseline "${NAMES[0]}" --models "${NAMES[@]:1}" \
    --data "$DATA_IN" --split "$SPLIT" --limit "$LIMIT" --out "$WORK/report-arm64"
  echo "== bench (arm64; qemu timings)"
  STEP="arm64 side: bench (log: $OUT/arm64.log)"
  in_root edgedet --verbose bench --models "${NAMES[@]}" --runs 5 --warmup 1
} > >(tee "$OUT/arm64.log") 2>&1
wait $! 2>/dev/null || true   # tee has written the whole log (bash 5.1+ can wait for it)
STEP="copy the arm64 report"
rm -rf "$OUT/arm64" && cp -r "$ROOT$WORK/report-arm64" "$OUT/arm64"

echo "== validate ($(uname -m), this machine)"
STEP="validate on this machine"
HOST_MODELS=(); for n in "${NAMES[@]}"; do HOST_MODELS+=("$ROOT$n"); done
allow_missed $EDGEDET validate --baseline "${HOST_MODELS[0]}" --models "${HOST_MODELS[@]:1}" \
  --data "$ROOT$DATA_IN" --split "$SPLIT" --limit "$LIMIT" --out "$OUT/$(uname -m)"
echo "== merge"
STEP="merge"
$EDGEDET report merge "$OUT/$(uname -m)" "$OUT/arm64" --out "$OUT/merged"
echo "arm64 check done: $OUT/merged/report.html"
