#!/usr/bin/env bash
# The ARM part of CI (called by .ci/run): installs the cross toolchains, qemu-user, zig and
# cargo-zigbuild when missing, builds the aarch64 and armv7 release tarballs with
# `cargo xtask dist`, and for each one checks its checksums and runs the shipped binary under
# qemu: `ghatta --version`, `ghatta selftest`, and `ghatta run` sending READY=1 and WATCHDOG=1
# to a notification socket. Then `install.sh --root` runs twice on a scratch image. Any failure
# fails the script. Takes ~20 min on a 2-core x86_64 machine (BENCHMARKS.md, Footprint (ARM)).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
# Pinned tool versions: the ones the release process was measured with.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
# Bounds, generous for qemu on a loaded 2-core machine.
SELFTEST_TIMEOUT_S=600
NOTIFY_TIMEOUT_S=300
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET_DIR/dist-ci
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

T0=$(date +%s)
step() { echo "=== arm.sh [$(($(date +%s) - T0)) s] $*"; }
fail() {
    echo "arm.sh: FAILED: $*" >&2
    exit 1
}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

step "tools"
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-gcc >/dev/null || missing+=(gcc-arm-linux-gnueabihf)
command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $SUDO apt-get update
    $SUDO apt-get install -y "${missing[@]}"
fi
rustup target add "${TARGETS[@]}" wasm32-unknown-unknown
if ! python3 -m ziglang version >/dev/null 2>&1 && ! command -v zig >/dev/null; then
    python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION"
fi
if ! cargo zigbuild --help >/dev/null 2>&1; then
    cargo install --locked cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION"
fi

step "xtask tests"
cargo test --locked -p xtask

step "cargo xtask dist (both targets)"
rm -rf "$OUT"
cargo xtask dist --out "$OUT"

# A free loopback port for the notify check's node.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for target in "${TARGETS[@]}"; do
    case "$target" in
    aarch64-*) QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    armv7-*) QEMU=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
    esac
    tarball=$(ls "$OUT"/ghatta-*-"$target".tar.gz)
    step "$target: checksums and contents of $(basename "$tarball")"
    (cd "$OUT" && sha256sum -c "$(basename "$tarball").sha256") || fail "$tarball does not match its .sha256"
    tar -xzf "$tarball" -C "$WORK"
    pkg="$WORK/$(basename "$tarball" .tar.gz)"
    (cd "$pkg" && sha256sum -c --quiet SHA256SUMS) || fail "$pkg: files do not match SHA256SUMS"
    for f in bin/ghatta ghatta.service install.sh README.md BUILDINFO examples/rpi4-relay-pzem-rfd900.toml examples/din-rail-industrial.toml; do
        [ -s "$pkg/$f" ] || fail "$tarball lacks $f"
    done
    bin="$pkg/bin/ghatta"
    echo "binary: $(stat -c %s "$bin") bytes; $(grep glibc_required "$pkg/BUILDINFO")"

    step "$target: ghatta --version under qemu"
    version=$("${QEMU[@]}" "$bin" --version) || fail "$target: ghatta --version failed under qemu"
    echo "$version"
    [[ "$version" == ghatta\ * ]] || fail "$target: unexpected --version output: $version"

    step "$target: ghatta selftest under qemu"
    mkdir -p "$WORK/selftest-$target"
    timeout "$SELFTEST_TIMEOUT_S" "${QEMU[@]}" "$bin" selftest --data-dir "$WORK/selftest-$target" --cluster-timeout 5m ||
        fail "$target: ghatta selftest failed under qemu (its FAIL lines above say which check)"

    step "$target: ghatta run under qemu notifies READY=1 and WATCHDOG=1"
    port=$(free_port)
    cfg="$WORK/notify-$target.toml"
    cat >"$cfg" <<EOF
id = 1
data_dir = "$WORK/notify-$target"
raft_listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:0"
link_profile = "lan"
bootstrap = true
# One node on loopback under qemu: a bench, so unsealed on purpose.
allow_unsealed = true
peers = [{ id = 1, addr = "127.0.0.1:$port" }]
[board]
kind = "sim"
customers = 2
EOF
    sock="$WORK/notify-$target.sock"
    # The receiver binds first, then waits for READY=1 followed by three WATCHDOG=1.
    python3 - "$sock" "$NOTIFY_TIMEOUT_S" >"$WORK/notify-$target.log" 2>&1 <<'EOF' &
import socket, sys, time
path, limit = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(1.0)
deadline, ready, pings = time.time() + limit, False, 0
while time.time() < deadline:
    try:
        lines = s.recv(4096).decode().split("\n")
    except socket.timeout:
        continue
    print(" | ".join(lines), flush=True)
    ready = ready or "READY=1" in lines
    if ready and "WATCHDOG=1" in lines:
        pings += 1
    if pings >= 3:
        print("notify: READY=1 and 3 watchdog pings received")
        sys.exit(0)
print(f"notify: ready={ready} pings={pings} after {limit} s")
sys.exit(1)
EOF
    receiver=$!
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    NOTIFY_SOCKET="$sock" WATCHDOG_USEC=4000000 "${QEMU[@]}" "$bin" run --config "$cfg" 2>"$WORK/run-$target.log" &
    node=$!
    rc=0
    wait "$receiver" || rc=$?
    kill -TERM "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
    cat "$WORK/notify-$target.log"
    [ "$rc" -eq 0 ] || { tail -20 "$WORK/run-$target.log"; fail "$target: ghatta run did not notify systemd as expected"; }
done

step "install.sh --root on a scratch image, twice"
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: groupadd/useradd --root need root"
else
    img="$WORK/image"
    pkg=$(ls -d "$WORK"/ghatta-*-aarch64-unknown-linux-gnu)
    mkdir -p "$img/etc" "$img/lib" "$img/data" "$img/usr/sbin"
    for f in passwd group shadow gshadow login.defs; do cp "/etc/$f" "$img/etc/"; done
    # The loader install.sh looks for, and the shell it gives the user.
    touch "$img/lib/ld-linux-aarch64.so.1" "$img/usr/sbin/nologin"
    for run in 1 2; do
        "$pkg/install.sh" --root "$img" --example rpi4-relay-pzem-rfd900 --data-partition /data ||
            fail "install.sh run $run failed"
    done
    [ "$(grep -c '^ghatta:' "$img/etc/passwd")" -eq 1 ] || fail "install.sh: user ghatta not created exactly once"
    for g in dialout gpio i2c; do
        grep -q "^$g:.*ghatta" "$img/etc/group" || fail "install.sh: ghatta is not in group $g"
    done
    [ "$(grep -c '/data/ghatta /var/lib/ghatta' "$img/etc/fstab")" -eq 1 ] || fail "install.sh: fstab bind line not added exactly once"
    cmp -s "$pkg/bin/ghatta" "$img/usr/local/bin/ghatta" || fail "install.sh: binary not installed"
    cmp -s "$pkg/examples/rpi4-relay-pzem-rfd900.toml" "$img/etc/ghatta/node.toml" || fail "install.sh: config not installed"
    [ -L "$img/etc/systemd/system/multi-user.target.wants/ghatta.service" ] || fail "install.sh: service not enabled"
    echo "install.sh: user, groups, files, fstab and enablement as expected after two runs"
fi

step "done: both ARM targets built, packaged and checked under qemu"
