#!/bin/sh
# Builds vmnap's tiny test guest: Debian's cloud kernel (downloaded, not installed) and a
# busybox initramfs that configures eth0 from the kernel command line and serves HTTP on
# port 80, TCP echo on port 7 and logs UDP port 9000 to the serial console, with Debian's
# qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0 when the guest has one.
# See README.md.
#
# Output (standard output, two lines, nothing else):
#   kernel=/var/cache/vmnap/images/kernel-<abi>/vmlinuz
#   initramfs=/var/cache/vmnap/images/initramfs-<abi>-<hash>.cpio.gz
# Progress and errors go to standard error. Exit status 0 on success, 1 on error.
#
# Environment:
#   VMNAP_IMAGE_DIR      cache directory (default /var/cache/vmnap/images)
#   VMNAP_IMAGE_REFRESH  if non-empty, ask apt for the current kernel ABI again instead of
#                        reusing the cached image (a newer kernel is then downloaded)
set -eu

DIR=${VMNAP_IMAGE_DIR:-/var/cache/vmnap/images}
HERE=$(cd "$(dirname "$0")" && pwd)
SELF="$HERE/$(basename "$0")"
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio failover net_failover virtio_net virtio_console"

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DIR" || die "cannot create $DIR"
command -v flock >/dev/null 2>&1 || die "flock not found (Debian package util-linux)"
exec 9>"$DIR/.lock"
flock 9

BUSYBOX=$(command -v busybox 2>/dev/null || true)
[ -n "$BUSYBOX" ] || die "busybox not found: apt-get install --no-install-recommends busybox-static"
# A hash of everything the initramfs is made from except the kernel's modules (the ABI is
# part of the file name): this script, the UDP logger's source and the busybox binary.
HASH=$(cat "$SELF" "$HERE/udplog.c" "$BUSYBOX" | sha256sum | cut -c1-16)

# Fast path: everything is cached.
if [ -z "${VMNAP_IMAGE_REFRESH:-}" ] && [ -f "$DIR/current" ]; then
    kernel='' initramfs='' hash=''
    . "$DIR/current"
    if [ "$hash" = "$HASH" ] && [ -f "$kernel" ] && [ -f "$initramfs" ]; then
        printf 'kernel=%s\ninitramfs=%s\n' "$kernel" "$initramfs"
        exit 0
    fi
fi

# --- checks ---------------------------------------------------------------------------
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked: apt-get install --no-install-recommends busybox-static"
fi
for a in httpd nc ip insmod netstat; do
    "$BUSYBOX" --list | grep -qx "$a" || die "$BUSYBOX has no '$a' applet (want Debian's busybox-static)"
done
for t in apt-get apt-cache dpkg-deb sha256sum gzip; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (Debian packages apt, dpkg, coreutils, gzip)"
done
CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 \
    || die "no C compiler ($CC) for the UDP logger: apt-get install --no-install-recommends gcc libc6-dev"

# --- kernel ---------------------------------------------------------------------------
ABI=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: linux-image-\(.*-cloud-amd64\)$/\1/p' | head -n 1)
if [ -z "$ABI" ]; then
    # No package lists (apt-get update not run): reuse the newest kernel already cached.
    ABI=$(ls -d "$DIR"/kernel-*/ 2>/dev/null | sed 's|.*/kernel-\(.*\)/$|\1|' | sort -V | tail -n 1)
    [ -n "$ABI" ] || die "apt-cache knows no linux-image-cloud-amd64: run apt-get update first"
    say "apt-cache knows no linux-image-cloud-amd64; using the cached kernel $ABI"
fi
KDIR="$DIR/kernel-$ABI"
missing=''
for m in $MODULES; do [ -f "$KDIR/modules/$m.ko" ] || missing=1; done
if [ ! -f "$KDIR/vmlinuz" ] || [ -n "$missing" ]; then
    say "downloading linux-image-$ABI"
    TMP=$(mktemp -d "$DIR/.kernel.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    (cd "$TMP" && apt-get download -q "linux-image-$ABI" >&2) \
        || die "apt-get download linux-image-$ABI failed (run apt-get update?)"
    dpkg-deb -x "$TMP"/linux-image-*.deb "$TMP/x"
    mkdir -p "$TMP/k/modules"
    cp "$TMP/x/boot/vmlinuz-$ABI" "$TMP/k/vmlinuz"
    MODDIR="$TMP/x/lib/modules/$ABI"
    [ -d "$MODDIR" ] || MODDIR="$TMP/x/usr/lib/modules/$ABI"
    for m in $MODULES; do
        f=$(find "$MODDIR" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
        [ -n "$f" ] || die "module $m not found in linux-image-$ABI"
        case "$f" in
            *.ko) cp "$f" "$TMP/k/modules/$m.ko" ;;
            *.ko.xz) "$BUSYBOX" unxz -c "$f" >"$TMP/k/modules/$m.ko" ;;
            *.ko.gz) gzip -dc "$f" >"$TMP/k/modules/$m.ko" ;;
            *.ko.zst)
                command -v zstd >/dev/null 2>&1 || die "$f is zstd-compressed: apt-get install zstd"
                zstd -qdc "$f" >"$TMP/k/modules/$m.ko" ;;
        esac
    done
    rm -rf "$KDIR"
    mv "$TMP/k" "$KDIR"
    rm -rf "$TMP"
    trap - EXIT
fi

# --- guest agent ----------------------------------------------------------------------
# Debian's qemu-guest-agent, downloaded (not installed); its libraries are the host's own
# (the same Debian release: qemu-system-x86 brings them), found by ldd.
QGA="$DIR/qemu-ga"
if [ ! -x "$QGA" ]; then
    say "downloading qemu-guest-agent"
    TMP=$(mktemp -d "$DIR/.qga.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    (cd "$TMP" && apt-get download -q qemu-guest-agent >&2) \
        || die "apt-get download qemu-guest-agent failed (run apt-get update?)"
    dpkg-deb -x "$TMP"/qemu-guest-agent_*.deb "$TMP/x"
    cp "$TMP/x/usr/sbin/qemu-ga" "$TMP/qemu-ga"
    mv "$TMP/qemu-ga" "$QGA"
    rm -rf "$TMP"
    trap - EXIT
fi
if ldd "$QGA" | grep -q 'not found'; then
    die "the guest agent needs libraries this host lacks ($(ldd "$QGA" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')): apt-get install --no-install-recommends libglib2.0-0 libnuma1 libudev1 liburing2"
fi
QGA_LIBS=$(ldd "$QGA" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }')

# --- initramfs ------------------------------------------------------------------------
OUT="$DIR/initramfs-$ABI-$HASH.cpio.gz"
if [ ! -f "$OUT" ]; then
    say "building $OUT"
    TMP=$(mktemp -d "$DIR/.initramfs.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    R="$TMP/root"
    mkdir -p "$R/bin" "$R/sbin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" \
        "$R/www" "$R/lib/modules"
    cp "$BUSYBOX" "$R/bin/busybox"
    for a in $("$BUSYBOX" --list); do
        [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
    done
    ln -s ../bin/busybox "$R/sbin/init"
    ln -s bin/busybox "$R/init"
    for m in $MODULES; do cp "$KDIR/modules/$m.ko" "$R/lib/modules/"; done
    echo "$MODULES" >"$R/etc/modules"
    cp "$QGA" "$R/bin/qemu-ga"
    for lib in $QGA_LIBS; do
        mkdir -p "$R$(dirname "$lib")"
        cp -L "$lib" "$R$lib"
    done
    ln -s ../bin/busybox "$R/sbin/hwclock"
    # What qemu-ga's guest-shutdown runs (`virsh shutdown --mode agent`): busybox has no
    # shutdown(8). It answers at once and powers off a moment later.
    cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/sh
( sleep 0.2; sync; poweroff -f ) &
exit 0
EOF
    chmod 755 "$R/sbin/shutdown"
    "$CC" -static -Os -o "$R/bin/vmnap-udplog" "$HERE/udplog.c" \
        || die "compiling udplog.c failed (static linking needs libc6-dev)"
    strip "$R/bin/vmnap-udplog" 2>/dev/null || true

    # busybox init (PID 1) runs /etc/rc once, then keeps the servers running (respawn)
    # and reaps orphans. Every entry's output goes to /dev/console (ttyS0).
    cat >"$R/etc/inittab" <<'EOF'
::sysinit:/etc/rc
::respawn:/bin/httpd -f -p 80 -h /www -c /etc/httpd.conf
::respawn:/bin/nc -ll -p 7 -e /bin/cat
::respawn:/bin/nc -ll -p 8 -e /bin/vmnap-dirty
::respawn:/bin/vmnap-udplog 9000
::respawn:/bin/vmnap-agent
::once:/etc/ready
::ctrlaltdel:/bin/poweroff -f
EOF
    cat >"$R/etc/rc" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The kernel's late messages (say "tsc: Refined TSC clocksource calibration", 2 s in) would land
# in the middle of the servers' lines on this console, the UDP logger's above all: from here
# on, only emergencies reach it. The boot messages before this line stay.
dmesg -n 1
echo "vmnap-guest: kernel console level $(cut -f1 /proc/sys/kernel/printk)"
name=guest ip4='' ip6=''
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmnap.name=*) name=${arg#vmnap.name=} ;;
        vmnap.ip=*) ip4=${arg#vmnap.ip=} ;;
        vmnap.ip6=*) ip6=${arg#vmnap.ip6=} ;;
    esac
done
hostname "$name"
for m in $(cat /etc/modules); do
    insmod /lib/modules/$m.ko || echo "vmnap-guest: insmod $m failed"
done
echo "hello from $name" >/www/index.html
ip link set lo up
n=0
while ! ip link show eth0 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -gt 500 ] && { echo "vmnap-guest: no eth0"; break; }
    usleep 10000
done
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra 2>/dev/null
echo 0 >/proc/sys/net/ipv6/conf/eth0/autoconf 2>/dev/null
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad 2>/dev/null
[ -n "$ip4" ] && ip addr add "$ip4" dev eth0
[ -n "$ip6" ] && ip -6 addr add "$ip6" dev eth0
ip link set eth0 up
echo "vmnap-guest: $name eth0 $(cat /sys/class/net/eth0/address) ${ip4:-no-ipv4} ${ip6:-no-ipv6}"
EOF
    cat >"$R/bin/vmnap-agent" <<'EOF'
#!/bin/sh
# Runs qemu-guest-agent on the virtio-serial port named org.qemu.guest_agent.0 (there is no
# udev here to make /dev/virtio-ports/...); a guest without that port idles instead.
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    exec /bin/qemu-ga -m virtio-serial -p "/dev/${p##*/}" -t /run -f /run/qemu-ga.pid
done
exec sleep 2147483647
EOF
    cat >"$R/bin/vmnap-dirty" <<'EOF'
#!/bin/sh
# Port 8: reads a percentage, writes that share of the guest's RAM (MemTotal) once, through
# a file in the root file system (RAM) that is removed at once, and answers
# "dirtied N MiB". The pages are freed again in the guest, but the host has seen them
# written: what a sleep that frees the guest's RAM has to write out.
read -r pct
pct=$(echo "$pct" | tr -d '\r')
case "$pct" in
    '' | *[!0-9]*) echo "want a percentage, 0 to 90"; exit 1 ;;
esac
[ "$pct" -le 90 ] || { echo "want a percentage, 0 to 90"; exit 1; }
total=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
mib=$((total * pct / 100 / 1024))
dd if=/dev/zero of=/tmp/vmnap-dirty bs=1M count="$mib" 2>/dev/null
rm -f /tmp/vmnap-dirty
echo "dirtied $mib MiB"
EOF
    cat >"$R/etc/ready" <<'EOF'
#!/bin/sh
# Prints the ready line once HTTP (80), TCP echo (7), the RAM dirtier (8) and the UDP
# logger (9000) listen.
while :; do
    t=$(netstat -ltn) u=$(netstat -lun)
    case "$t" in *":80 "*) case "$t" in *":7 "*) case "$t" in *":8 "*)
        case "$u" in *":9000 "*)
        echo "vmnap-guest ready"; exit 0 ;; esac ;; esac ;; esac ;; esac
    usleep 20000
done
EOF
    # Every path answers with the same body: "/" with 200, anything else with 404.
    echo 'E404:/www/index.html' >"$R/etc/httpd.conf"
    chmod 755 "$R/etc/rc" "$R/etc/ready" "$R/bin/vmnap-dirty" "$R/bin/vmnap-agent"
    (cd "$R" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) \
        | gzip -9n >"$TMP/initramfs.cpio.gz"
    mv "$TMP/initramfs.cpio.gz" "$OUT"
    rm -rf "$TMP"
    trap - EXIT
    # Older initramfs builds of this cache are of no further use.
    for old in "$DIR"/initramfs-*.cpio.gz; do
        [ "$old" = "$OUT" ] || rm -f "$old"
    done
fi

printf "hash='%s'\nkernel='%s'\ninitramfs='%s'\n" "$HASH" "$KDIR/vmlinuz" "$OUT" >"$DIR/current.tmp"
mv "$DIR/current.tmp" "$DIR/current"
printf 'kernel=%s\ninitramfs=%s\n' "$KDIR/vmlinuz" "$OUT"
