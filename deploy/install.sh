#!/bin/sh
# Installs (or upgrades) ghatta on a board from an unpacked release tarball: checks the files and
# the board, creates the service user and device groups, installs the binary, the systemd unit,
# the udev rule and the example configs, and enables the service. Safe to run again: it never
# overwrites /etc/ghatta/node.toml and only adds what is missing.
#
#   sudo ./install.sh [--example NAME | --config FILE] [--data-partition DIR] [--no-start]
#                     [--root DIR]
#
# --example NAME        start from examples/NAME.toml when /etc/ghatta/node.toml does not exist
# --config FILE         install FILE as /etc/ghatta/node.toml when it does not exist
# --data-partition DIR  keep the node's state on DIR (a writable partition mounted there, e.g.
#                       /data): DIR/ghatta is bind-mounted on /var/lib/ghatta through fstab,
#                       so the root file system may be read-only
# --no-start            enable the service but do not (re)start it
# --root DIR            install into an image mounted at DIR (no service is started)
set -eu

PREFIX=/usr/local
BIN="$PREFIX/bin/ghatta"
UNIT=/etc/systemd/system/ghatta.service
UDEV_RULE=/etc/udev/rules.d/60-ghatta.rules
CONF_DIR=/etc/ghatta
CONF="$CONF_DIR/node.toml"
SHARE="$PREFIX/share/ghatta"
DOC="$PREFIX/share/doc/ghatta"
STATE_DIR=/var/lib/ghatta
USER_NAME=ghatta
# Groups that own the devices the node opens (the unit's SupplementaryGroups).
DEVICE_GROUPS="dialout gpio i2c"

here=$(cd "$(dirname "$0")" && pwd)
example=""
config_src=""
data_partition=""
start=yes
root=""

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --example) [ $# -ge 2 ] || die "--example needs a name (ls $here/examples)"; example=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; config_src=$2; shift 2 ;;
    --data-partition) [ $# -ge 2 ] || die "--data-partition needs a directory"; data_partition=$2; shift 2 ;;
    --no-start) start=no; shift ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; start=no; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"
[ -z "$root" ] || [ -d "$root" ] || die "--root $root is not a directory"

# 1. The release is intact and made for this board.
cd "$here"
[ -f SHA256SUMS ] || die "SHA256SUMS is missing from $here; unpack the whole tarball"
if command -v sha256sum >/dev/null 2>&1; then
    sha256sum -c --quiet SHA256SUMS || die "files in $here do not match SHA256SUMS; download the tarball again"
else
    say "warning: sha256sum not found; skipping the file check"
fi
target=$(sed -n 's/^target = //p' BUILDINFO)
glibc_needed=$(sed -n 's/^glibc_required = //p' BUILDINFO)
# The binary needs its architecture's dynamic loader: this tells a 32-bit OS on a 64-bit
# kernel (uname -m says aarch64 there) from a 64-bit one.
case "$target" in
aarch64-*) loader=/lib/ld-linux-aarch64.so.1 other=armv7-unknown-linux-gnueabihf ;;
armv7-*) loader=/lib/ld-linux-armhf.so.3 other=aarch64-unknown-linux-gnu ;;
*) die "BUILDINFO names target '$target', which this script does not know" ;;
esac
[ -e "$root$loader" ] || die "this tarball is for $target but the OS has no $loader (dpkg says: $(dpkg --print-architecture 2>/dev/null || echo unknown)); use the $other tarball"
if [ -z "$root" ] && [ -n "$glibc_needed" ] && [ "$glibc_needed" != none ]; then
    have=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //') || have=""
    if [ -n "$have" ]; then
        oldest=$(printf '%s\n%s\n' "$glibc_needed" "$have" | sort -t. -k1,1n -k2,2n | head -n1)
        [ "$oldest" = "$glibc_needed" ] || die "ghatta needs glibc $glibc_needed but this OS has $have; upgrade the OS image (Debian 10 / Raspberry Pi OS Buster or later)"
    fi
fi

# 2. /etc and /usr must be writable now; the state goes elsewhere.
if [ -z "$root" ] && ! touch /etc/.ghatta-install-probe 2>/dev/null; then
    die "the root file system is read-only; make it writable for the install (e.g. 'mount -o remount,rw /', or turn the overlay file system off in raspi-config), run this again, then make it read-only again"
fi
rm -f /etc/.ghatta-install-probe

# 3. Groups and the service user.
for g in $DEVICE_GROUPS $USER_NAME; do
    if ! grep -q "^$g:" "$root/etc/group"; then
        groupadd ${root:+--root "$root"} --system "$g"
        say "created group $g"
    fi
done
if ! grep -q "^$USER_NAME:" "$root/etc/passwd"; then
    nologin=/usr/sbin/nologin
    [ -x "$root$nologin" ] || nologin=/sbin/nologin
    useradd ${root:+--root "$root"} --system --gid "$USER_NAME" --home-dir "$STATE_DIR" \
        --no-create-home --shell "$nologin" --comment "ghatta grid controller" "$USER_NAME"
    say "created user $USER_NAME"
fi
# Idempotent: -a adds the groups the user lacks and keeps the others.
usermod ${root:+--root "$root"} -a -G "$(echo $DEVICE_GROUPS | tr ' ' ',')" "$USER_NAME"

# 4. Files. The binary is replaced by rename, so a running node keeps its old inode until restart.
install -d -m 0755 "$root$PREFIX/bin" "$root$SHARE/examples" "$root$DOC" "$root/etc/systemd/system" "$root/etc/udev/rules.d"
install -m 0755 bin/ghatta "$root$BIN.new"
mv -f "$root$BIN.new" "$root$BIN"
install -m 0644 ghatta.service "$root$UNIT"
install -m 0644 README.md BUILDINFO "$root$DOC/"
for f in examples/*.toml; do install -m 0644 "$f" "$root$SHARE/examples/"; done
# gpiochip and i2c-dev nodes are root-only on many images (Raspberry Pi OS has its own rules
# giving them to gpio and i2c); this rule does the same everywhere.
cat >"$root$UDEV_RULE" <<'EOF'
# ghatta: relays on GPIO character devices and the ADC on I2C, through groups (deploy/install.sh).
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
SUBSYSTEM=="i2c-dev", GROUP="i2c", MODE="0660"
EOF
say "installed $BIN ($target), $UNIT, $UDEV_RULE, examples in $SHARE/examples"
if [ -z "$root" ]; then
    version=$("$BIN" --version) || die "$BIN does not run on this board; check that the tarball matches the OS (BUILDINFO: $target, glibc $glibc_needed)"
    say "$version runs"
fi

# 5. Config: never overwritten.
install -d -m 0755 "$root$CONF_DIR"
config_new=no
if [ ! -e "$root$CONF" ]; then
    if [ -n "$config_src" ]; then
        install -m 0644 "$config_src" "$root$CONF"
    elif [ -n "$example" ]; then
        [ -f "examples/$example.toml" ] || die "no example $example; choose one of: $(cd examples && ls *.toml | sed 's/\.toml$//' | tr '\n' ' ')"
        install -m 0644 "examples/$example.toml" "$root$CONF"
    else
        die "$CONF does not exist: pass --example NAME (one of: $(cd examples && ls *.toml | sed 's/\.toml$//' | tr '\n' ' ')) or --config FILE"
    fi
    config_new=yes
    say "wrote $CONF; edit it (node id, peers, board) before starting"
else
    say "kept the existing $CONF"
fi

# 6. State on the data partition, bind-mounted where StateDirectory= expects it.
install -d -m 0750 "$root$STATE_DIR"
if [ -n "$data_partition" ]; then
    [ -d "$root$data_partition" ] || die "--data-partition $data_partition is not a directory; mount the data partition there first (and list it in /etc/fstab)"
    install -d -m 0750 "$root$data_partition/ghatta"
    line="$data_partition/ghatta $STATE_DIR none bind,nofail 0 0"
    if ! grep -qs "^$data_partition/ghatta[[:space:]]" "$root/etc/fstab"; then
        echo "$line" >>"$root/etc/fstab"
        say "added to /etc/fstab: $line"
    fi
    if [ -z "$root" ] && ! mountpoint -q "$STATE_DIR"; then
        mount "$STATE_DIR" || die "cannot bind-mount $data_partition/ghatta on $STATE_DIR; check /etc/fstab"
    fi
fi
# systemd hands StateDirectory= to the user at every start; doing it now also lets the
# selftest below run as that user before the first start.
[ -n "$root" ] || chown "$USER_NAME:$USER_NAME" "$STATE_DIR"

# 7. The service.
if [ -n "$root" ] || [ ! -d /run/systemd/system ]; then
    systemctl ${root:+--root="$root"} enable ghatta.service >/dev/null
    say "enabled ghatta.service (systemd is not running here: it starts at the board's next boot)"
else
    udevadm control --reload-rules 2>/dev/null && udevadm trigger --subsystem-match=gpio --subsystem-match=i2c-dev 2>/dev/null || true
    systemctl daemon-reload
    systemctl enable ghatta.service >/dev/null
    if [ "$start" = yes ] && [ "$config_new" = no ]; then
        systemctl restart ghatta.service
        say "restarted ghatta.service"
    else
        say "enabled ghatta.service; start it with: sudo systemctl start ghatta"
    fi
fi
say "check the board with: sudo -u $USER_NAME $BIN selftest --config $CONF"
say "follow the logs with: journalctl -u ghatta -f"
