#!/usr/bin/env bash
# ishowttsd installer.
#
#   ./install.sh --dev            a development install: .venv/ in this checkout, everything the
#                                 daemon and the test suite need (idempotent: a second run is a no-op)
#   ./install.sh --dev --start    the same, then start the daemon (embedded voice) and speak a greeting
#
# System libraries come from apt when run as root; otherwise it says which to install.
# It never downloads model weights: F5-TTS weights are fetched only by `ishowtts-models fetch`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
APT_PACKAGES=(libportaudio2 libasound2 alsa-utils)

# pip on the workplace machines warns about every configured local index it does not find.
pip_in() { local venv="$1"; shift; "$venv/bin/pip" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# --- system libraries ----------------------------------------------------------------------------
ensure_system_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "warning: missing system packages: ${missing[*]} (ALSA playback needs them)."
        say "         run: sudo apt-get install ${missing[*]}"
    fi
}

# --- python environment ----------------------------------------------------------------------------
is_jetson() { [ -e /etc/nv_tegra_release ] || grep -qa 'nvidia,tegra' /proc/device-tree/compatible 2>/dev/null; }

install_torch() {
    local venv="$1"
    if is_jetson; then
        # JetPack's CUDA torch: PyPI's aarch64 wheels are CPU-only. See docs/INSTALL.md.
        if [ -n "${JETPACK_TORCH_WHEEL:-}" ]; then
            pip_in "$venv" install -q "$JETPACK_TORCH_WHEEL"
        else
            pip_in "$venv" install -q --index-url "${JETPACK_TORCH_INDEX:-https://pypi.jetson-ai-lab.io/jp6/cu126}" torch
        fi
    else
        # On x86_64 this is a CPU build (a local wheel on the workplace machines: ~20 s).
        pip_in "$venv" install -q "torch==${TORCH_VERSION}"
    fi
}

# torchaudio on PyPI is built against one torch; beside another torch its native library fails to
# load. torchaudio >= 2.9 then works in pure-Python mode (MelSpectrogram, resampling: all that
# f5-tts and vocos use) once the native libraries are gone, so remove them if they don't load.
fix_torchaudio() {
    local venv="$1"
    if ! "$venv/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
        local lib
        lib="$("$venv/bin/python" -c 'import importlib.util,os;print(os.path.join(os.path.dirname(importlib.util.find_spec("torchaudio").origin),"lib"))')"
        say "torchaudio's native library does not match this torch: using its pure-Python mode"
        rm -f "$lib"/*.so
        "$venv/bin/python" -c "import torchaudio" || die "torchaudio still fails to import"
    fi
}

make_venv() {
    local venv="$1" extras="$2"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    local stamp="$venv/.ishowtts-stamp"
    local want
    want="$(cat "$HERE/requirements/lock.txt" "$HERE/requirements/f5-nodeps.txt" "$HERE/pyproject.toml" | sha256sum | cut -c1-16)-$extras-$(uname -m)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$venv is up to date"
        return 0
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    "$venv/bin/python" -c "import torch" >/dev/null 2>&1 || install_torch "$venv"
    pip_in "$venv" install -q -r "$HERE/requirements/lock.txt"
    pip_in "$venv" install -q --no-deps -r "$HERE/requirements/f5-nodeps.txt"
    fix_torchaudio "$venv"
    if [ "$extras" = "dev" ]; then
        pip_in "$venv" install -q --no-deps -e "$HERE"
    else
        pip_in "$venv" install -q --no-deps "$HERE"
    fi
    "$venv/bin/python" -c "import ishowttsd.daemon, piper, zmq, torch, vocos" || die "import check failed in $venv"
    echo "$want" >"$stamp"
    say "$venv ready"
}

# --- --start: run the daemon from the checkout and speak -----------------------------------------------
start_dev_daemon() {
    local venv="$HERE/.venv" run="$HERE/.run"
    mkdir -p "$run"
    local sinks='["alsa", "pcm"]'
    if ! "$venv/bin/python" -c 'import sounddevice as sd, sys; sys.exit(0 if any(d["max_output_channels"] > 0 for d in sd.query_devices()) else 1)' 2>/dev/null; then
        say "no audio output device here: speaking into .run/hello.wav through the PCM sink instead"
        sinks='["pcm"]'
    fi
    cat >"$run/ishowtts.toml" <<EOF
# Written by install.sh --dev --start: the daemon from this checkout, sockets in .run/.
[zmq]
control = "ipc://$run/control.sock"
ingest = "ipc://$run/ingest.sock"
pcm = "ipc://$run/pcm.sock"
[daemon]
state_dir = "$run/state"
cache_dir = "$run/cache"
[audio]
sinks = $sinks
EOF
    if [ -f "$run/ishowttsd.pid" ] && kill -0 "$(cat "$run/ishowttsd.pid")" 2>/dev/null; then
        say "stopping the previous dev daemon"
        kill "$(cat "$run/ishowttsd.pid")" && sleep 1
    fi
    nohup "$venv/bin/ishowttsd" --config "$run/ishowtts.toml" >"$run/ishowttsd.log" 2>&1 &
    echo $! >"$run/ishowttsd.pid"
    export ISHOWTTS_CONTROL="ipc://$run/control.sock"
    for _ in $(seq 1 120); do
        "$venv/bin/ishowtts-say" --ping --connect-timeout 1 >/dev/null 2>&1 && \
            [ "$("$venv/bin/ishowtts-say" --ping --connect-timeout 1)" = ready ] && break
        kill -0 "$(cat "$run/ishowttsd.pid")" 2>/dev/null || { cat "$run/ishowttsd.log" >&2; die "the daemon exited"; }
        sleep 0.5
    done
    "$venv/bin/ishowtts-say" --wait -o "$run/hello.wav" "Hello chat! ishowtts is up and running." \
        || die "the greeting failed; see $run/ishowttsd.log"
    say "the daemon is running (pid $(cat "$run/ishowttsd.pid"), log $run/ishowttsd.log); it said hello into $run/hello.wav"
    say "try:  ISHOWTTS_CONTROL=$ISHOWTTS_CONTROL .venv/bin/ishowtts-say --wait \"your text\""
    say "stop: kill \$(cat .run/ishowttsd.pid)"
}

main() {
    local mode="" start=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --dev) mode=dev ;;
            --start) start=1 ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    case "$mode" in
        dev)
            ensure_system_packages
            make_venv "$HERE/.venv" dev
            if [ "$start" -eq 1 ]; then start_dev_daemon; fi
            ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
