#!/usr/bin/env bash
# ishowttsd installer.
#
#   ./install.sh --dev            a development install: .venv/ in this checkout, everything the
#                                 daemon and the test suite need (idempotent: a second run is a no-op)
#   ./install.sh --dev --start    the same, then start the daemon (embedded voice) and speak a greeting
#   sudo ./install.sh             the appliance: venv in /opt/ishowtts, /etc/ishowtts/ishowtts.toml,
#                                 systemd units (enabled when systemd runs), user ishowtts
#        --root DIR               stage the system install under DIR instead of / (tests, images)
#        --skip-venv              ... without building the Python environment (also ISHOWTTS_SKIP_VENV=1)
#   sudo ./install.sh --uninstall [--purge]   remove it; --purge also config, weights, caches, user
#
# System libraries come from apt when run as root; otherwise it says which to install.
# It never downloads model weights: F5-TTS weights are fetched only by `ishowtts-models fetch`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
APT_PACKAGES=(libportaudio2 libasound2 alsa-utils strace)
# --dev only: what the test suite drives from outside (a real browser for the web pages, a real
# load balancer for the fleet test).
DEV_APT_PACKAGES=(chromium chromium-driver fonts-liberation haproxy)

# pip on the workplace machines warns about every configured local index it does not find.
pip_in() { local venv="$1"; shift; "$venv/bin/pip" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

# --- system libraries ----------------------------------------------------------------------------
ensure_system_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "warning: missing system packages: ${missing[*]} (ALSA playback and the tests need them)."
        say "         run: sudo apt-get install ${missing[*]}"
    fi
}

# --- python environment ----------------------------------------------------------------------------
is_jetson() { [ -e /etc/nv_tegra_release ] || grep -qa 'nvidia,tegra' /proc/device-tree/compatible 2>/dev/null; }

install_torch() {
    local venv="$1"
    if is_jetson; then
        # JetPack's CUDA torch: PyPI's aarch64 wheels are CPU-only. See README.md, "JetPack (aarch64)".
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
    # --pid-file: the daemon removes it when it stops cleanly (the echo covers its first moments).
    nohup "$venv/bin/ishowttsd" --config "$run/ishowtts.toml" --pid-file "$run/ishowttsd.pid" \
        >"$run/ishowttsd.log" 2>&1 &
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

# --- system install (root): /opt/ishowtts, /etc/ishowtts, units, user --------------------------------
# Layout (under --root DIR when staging):
#   /opt/ishowtts/venv                    the Python environment (JetPack torch on a Jetson)
#   /opt/ishowtts/share/                  the pristine default config and docs/APPLIANCE.md
#   /etc/ishowtts/ishowtts.toml           the config: installed once, never overwritten once edited
#   /etc/systemd/system/ishowtts*.service the units (ours: local changes go in drop-ins)
#   /usr/lib/sysusers.d/ishowtts.conf     user ishowtts in audio, video, render (+ jtop if present)
#   /usr/lib/tmpfiles.d/ishowtts.conf     /var/lib/ishowtts (weights, journal), /var/cache/ishowtts
#   /usr/local/bin/ishowtts-*             links to the venv's commands
#   /etc/profile.d/ishowtts.sh            points ishowtts-say & co. at the system daemon's sockets
SYS_PREFIX=/opt/ishowtts
SYS_UNITS=(ishowtts-clocks.service ishowtts.service)
SYS_ENABLE=ishowtts.service  # the clocks unit has no [Install]: the daemon's Wants= pulls it in
SYS_USER=ishowtts

sys_path() { printf '%s%s' "${ROOT%/}" "$1"; }
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

sys_user() {
    local conf
    conf="$(sys_path /usr/lib/sysusers.d/ishowtts.conf)"
    mkdir -p "$(dirname "$conf")"
    {
        echo "# Written by ishowttsd's install.sh: the daemon's user and the device groups it needs."
        echo "u $SYS_USER - \"ishowtts chat-to-speech daemon\" /var/lib/ishowtts /usr/sbin/nologin"
        echo "g render - -"
        echo "m $SYS_USER audio"
        echo "m $SYS_USER video"
        echo "m $SYS_USER render"
        # jetson-stats' socket is group jtop: membership lets telemetry use jtop instead of sysfs.
        if grep -q '^jtop:' "$(sys_path /etc/group)" 2>/dev/null; then echo "m $SYS_USER jtop"; fi
    } >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    mkdir -p "$(sys_path /etc)"
    if command -v systemd-sysusers >/dev/null; then
        if [ -n "$ROOT" ]; then systemd-sysusers --root="$ROOT" ishowtts.conf; else systemd-sysusers ishowtts.conf; fi
    elif [ -z "$ROOT" ]; then
        getent group render >/dev/null || groupadd --system render
        id "$SYS_USER" >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/ishowtts \
            --no-create-home --shell /usr/sbin/nologin --comment "ishowtts chat-to-speech daemon" "$SYS_USER"
        usermod -a -G audio,video,render "$SYS_USER"
    else
        say "warning: no systemd-sysusers: user $SYS_USER not created in $ROOT"
    fi
}

sys_dirs() {
    local conf
    conf="$(sys_path /usr/lib/tmpfiles.d/ishowtts.conf)"
    mkdir -p "$(dirname "$conf")"
    cat >"$conf" <<TMPF
# Written by ishowttsd's install.sh. systemd's StateDirectory=/CacheDirectory= also create these.
d /var/lib/ishowtts 0750 $SYS_USER $SYS_USER -
d /var/lib/ishowtts/web 0750 $SYS_USER $SYS_USER -
d /var/lib/ishowtts/voices 2770 $SYS_USER $SYS_USER -
d /var/cache/ishowtts 0750 $SYS_USER $SYS_USER -
d /var/lib/ishowtts-clocks 0700 root root -
TMPF
    if command -v systemd-tmpfiles >/dev/null; then
        if [ -n "$ROOT" ]; then
            systemd-tmpfiles --create --root="$ROOT" ishowtts.conf
        else
            systemd-tmpfiles --create ishowtts.conf
        fi
    else
        install -d -m 0750 "$(sys_path /var/lib/ishowtts)" "$(sys_path /var/lib/ishowtts/web)" \
            "$(sys_path /var/cache/ishowtts)"
        install -d -m 2770 "$(sys_path /var/lib/ishowtts/voices)"
        install -d -m 0700 "$(sys_path /var/lib/ishowtts-clocks)"
        [ -n "$ROOT" ] || chown "$SYS_USER:$SYS_USER" /var/lib/ishowtts /var/lib/ishowtts/web \
            /var/lib/ishowtts/voices /var/cache/ishowtts
    fi
}

# The config is the operator's: install it once; afterwards replace it only while it is still
# byte-for-byte the default we installed last time, else leave it and put the new default beside it.
sys_config() {
    local conf share new old
    conf="$(sys_path /etc/ishowtts/ishowtts.toml)"
    share="$(sys_path "$SYS_PREFIX/share")"
    new="$HERE/etc/ishowtts.toml"
    old="$share/ishowtts.toml.default"
    install -d -m 0755 "$(dirname "$conf")" "$share"
    if [ ! -e "$conf" ]; then
        install -m 0640 "$new" "$conf"
        say "installed $conf"
    elif cmp -s "$conf" "$new"; then
        :
    elif [ -f "$old" ] && cmp -s "$conf" "$old"; then
        install -m 0640 "$new" "$conf"
        say "updated the unedited $conf to the new default"
    elif [ -f "$old" ] && cmp -s "$new" "$old"; then
        :  # edited, and the default has not changed since: nothing to say
    else
        install -m 0640 "$new" "$conf.new"
        say "kept your edited $conf; the new default is in $conf.new"
    fi
    # Group-readable by the daemon only: the file may hold chat credentials.
    if grep -q "^$SYS_USER:" "$(sys_path /etc/group)" 2>/dev/null; then
        chgrp "$(grep "^$SYS_USER:" "$(sys_path /etc/group)" | cut -d: -f3)" "$conf" "$conf.new" 2>/dev/null || true
    fi
    install -m 0644 "$new" "$old"
    install -m 0644 "$HERE/docs/APPLIANCE.md" "$share/APPLIANCE.md"
    install -m 0644 "$HERE/docs/TWITCH.md" "$share/TWITCH.md"
    install -m 0644 "$HERE/docs/WYOMING.md" "$share/WYOMING.md"
    install -m 0644 "$HERE/docs/WEB.md" "$share/WEB.md"
    install -m 0644 "$HERE/docs/DASHBOARD.md" "$share/DASHBOARD.md"
}

sys_units() {
    local dir u
    dir="$(sys_path /etc/systemd/system)"
    install -d -m 0755 "$dir"
    for u in "${SYS_UNITS[@]}"; do install -m 0644 "$HERE/systemd/$u" "$dir/$u"; done
    # A template, never enabled here: one instance per channel (systemctl enable --now ishowtts-twitch@NAME).
    install -m 0644 "$HERE/systemd/ishowtts-twitch@.service" "$dir/ishowtts-twitch@.service"
    # Optional, not enabled here: Home Assistant's Wyoming door (systemctl enable --now ishowtts-wyoming).
    install -m 0644 "$HERE/systemd/ishowtts-wyoming.service" "$dir/ishowtts-wyoming.service"
    # Optional, not enabled here: the web gateway (systemctl enable --now ishowtts-web; loopback only
    # until its LAN drop-in, docs/WEB.md).
    install -m 0644 "$HERE/systemd/ishowtts-web.service" "$dir/ishowtts-web.service"
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable "$SYS_ENABLE"
    elif [ -n "$ROOT" ] && command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" enable "$SYS_ENABLE" 2>/dev/null  # offline: only the .wants link
    else
        say "systemd is not running: units installed, not enabled (run: systemctl enable $SYS_ENABLE)"
    fi
}

sys_links() {
    local bin exe
    bin="$(sys_path /usr/local/bin)"
    install -d -m 0755 "$bin"
    for exe in "$(sys_path "$SYS_PREFIX/venv/bin")"/ishowtts*; do
        [ -x "$exe" ] || continue
        ln -sfn "$SYS_PREFIX/venv/bin/$(basename "$exe")" "$bin/$(basename "$exe")"
    done
    install -d -m 0755 "$(sys_path /etc/profile.d)"
    cat >"$(sys_path /etc/profile.d/ishowtts.sh)" <<'PROF'
# Written by ishowttsd's install.sh: clients talk to the system daemon unless told otherwise.
export ISHOWTTS_CONTROL="${ISHOWTTS_CONTROL:-ipc:///run/ishowtts/control.sock}"
export ISHOWTTS_INGEST="${ISHOWTTS_INGEST:-ipc:///run/ishowtts/ingest.sock}"
export ISHOWTTS_PCM="${ISHOWTTS_PCM:-ipc:///run/ishowtts/pcm.sock}"
PROF
}

system_install() {
    if [ -z "$ROOT" ]; then
        [ "$(id -u)" -eq 0 ] || die "the system install needs root (or --root DIR to stage one)"
        ensure_system_packages
    fi
    sys_user
    sys_dirs
    if [ "$SKIP_VENV" = 1 ]; then
        say "skipping the Python environment (--skip-venv)"
    else
        make_venv "$(sys_path "$SYS_PREFIX/venv")" system
    fi
    sys_config
    sys_units
    sys_links
    say "installed under ${ROOT:-/}."
    say "next: fetch the F5-TTS weights (nothing is downloaded without you):  sudo -u $SYS_USER ishowtts-models fetch"
    say "      then: systemctl start ishowtts   (the embedded Piper voice works without weights)"
}

system_uninstall() {
    [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "--uninstall needs root (or --root DIR)"
    local u exe
    if systemd_running; then
        # One transaction: the daemon stops first, then the clocks unit restores the clocks.
        systemctl disable --now "${SYS_UNITS[@]}" 2>/dev/null || true
    elif [ -n "$ROOT" ] && command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" disable "${SYS_UNITS[@]}" 2>/dev/null || true
    fi
    for u in "${SYS_UNITS[@]}"; do rm -f "$(sys_path "/etc/systemd/system/$u")"; done
    if systemd_running; then
        systemctl stop 'ishowtts-twitch@*.service' 2>/dev/null || true
        systemctl disable --now ishowtts-wyoming.service 2>/dev/null || true
        systemctl disable --now ishowtts-web.service 2>/dev/null || true
    fi
    rm -f "$(sys_path /etc/systemd/system)/ishowtts-twitch@.service" \
        "$(sys_path /etc/systemd/system)/ishowtts-wyoming.service" \
        "$(sys_path /etc/systemd/system)/ishowtts-web.service" \
        "$(sys_path /etc/systemd/system/multi-user.target.wants)/ishowtts-web.service" \
        "$(sys_path /etc/systemd/system/multi-user.target.wants)"/ishowtts-twitch@*.service \
        "$(sys_path /etc/systemd/system/multi-user.target.wants)/ishowtts-wyoming.service"
    if systemd_running; then systemctl daemon-reload; fi
    for exe in "$(sys_path /usr/local/bin)"/ishowtts*; do
        if [ -L "$exe" ]; then case "$(readlink "$exe")" in "$SYS_PREFIX"/*) rm -f "$exe" ;; esac; fi
    done
    rm -rf "$(sys_path "$SYS_PREFIX")"
    rm -f "$(sys_path /etc/profile.d/ishowtts.sh)" "$(sys_path /usr/lib/tmpfiles.d/ishowtts.conf)"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$(sys_path /etc/ishowtts)" "$(sys_path /var/lib/ishowtts)" "$(sys_path /var/cache/ishowtts)" \
            "$(sys_path /var/lib/ishowtts-clocks)"
        rm -f "$(sys_path /usr/lib/sysusers.d/ishowtts.conf)"
        if [ -z "$ROOT" ] && id "$SYS_USER" >/dev/null 2>&1; then userdel "$SYS_USER" || true; fi
        say "removed ishowttsd, its config, weights, caches and user"
    else
        say "removed ishowttsd; kept /etc/ishowtts, /var/lib/ishowtts (weights) and user $SYS_USER (--purge removes them)"
    fi
}

main() {
    local mode="" start=0
    ROOT="" PURGE=0 SKIP_VENV="${ISHOWTTS_SKIP_VENV:-0}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --dev) mode=dev ;;
            --start) start=1 ;;
            --system) mode=system ;;
            --uninstall) mode=uninstall ;;
            --purge) PURGE=1 ;;
            --skip-venv) SKIP_VENV=1 ;;
            --root)
                [ $# -ge 2 ] || die "--root needs a directory"
                ROOT="$(realpath -m "$2")"; shift
                [ "$ROOT" != / ] || ROOT=""
                ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    if [ -z "$mode" ] && { [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ]; }; then mode=system; fi
    case "$mode" in
        system) system_install ;;
        uninstall) system_uninstall ;;
        dev)
            ensure_system_packages "${DEV_APT_PACKAGES[@]}"
            make_venv "$HERE/.venv" dev
            if [ "$start" -eq 1 ]; then start_dev_daemon; fi
            ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
