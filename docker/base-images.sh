#!/bin/sh
# docker/base-images.sh: builds the two base images the Dockerfile needs, for machines
# that have no image registry, from Debian's packages and the host's Rust toolchain.
#
#   RUNTIME_IMAGE (default raftkv-local/debian:bookworm-slim): a Debian bookworm
#     `debootstrap --variant=minbase` root file system, trimmed of docs and apt lists,
#     imported with `docker import`. Stands in for debian:bookworm-slim.
#   RUST_IMAGE (default raftkv-local/rust:bookworm): that image plus gcc and libc6-dev
#     (from Debian's packages, through apt inside the build) and the host's rustc and
#     cargo (the active rustup toolchain, copied in). Stands in for rust:1-bookworm.
#
# An image whose tag already exists is kept (delete it to rebuild). The Debian mirror
# is the one apt uses on this host (/etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list), or DEBIAN_MIRROR. Needs root (debootstrap), docker and
# debootstrap. Prints the two tags on its last line: "RUNTIME_IMAGE RUST_IMAGE".
#
# With a registry none of this is needed: the Dockerfile defaults to rust:1-bookworm
# and debian:bookworm-slim.
set -eu

RUNTIME_IMAGE=${RUNTIME_IMAGE:-raftkv-local/debian:bookworm-slim}
RUST_IMAGE=${RUST_IMAGE:-raftkv-local/rust:bookworm}
here=$(cd "$(dirname "$0")" && pwd)

log() { echo "base-images: $*" >&2; }

has_image() { docker image inspect "$1" > /dev/null 2>&1; }

# The first Debian (not security) mirror apt is configured with.
apt_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed -n 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n' | grep -v -- '-security' | head -n 1
    done | grep . | head -n 1 && return
    if [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /-security/ { print $2; exit }
             $1 == "deb" && $2 ~ /^\[/ && $3 !~ /-security/ { print $3; exit }' \
            /etc/apt/sources.list | grep . && return
    fi
    log "no Debian mirror found in apt's sources; set DEBIAN_MIRROR"
    exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-base-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

if has_image "$RUNTIME_IMAGE"; then
    log "$RUNTIME_IMAGE exists, kept"
else
    mirror=$(apt_mirror)
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        exit 1
    }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* \
        "$work/rootfs/usr/share/doc" "$work/rootfs/usr/share/man" "$work/rootfs/usr/share/info" \
        "$work/rootfs/usr/share/locale" "$work/rootfs/var/log/"*
    log "docker import as $RUNTIME_IMAGE"
    tar -C "$work/rootfs" -c . | docker import - "$RUNTIME_IMAGE" > /dev/null
    rm -rf "$work/rootfs"
fi

if has_image "$RUST_IMAGE"; then
    log "$RUST_IMAGE exists, kept"
else
    sysroot=$(rustc --print sysroot)
    log "builder image from $RUNTIME_IMAGE and the toolchain in $sysroot"
    mkdir -p "$work/ctx/toolchain/bin"
    cp "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$work/ctx/toolchain/bin/"
    # The compiler's shared libraries and the standard library of the host target only
    # (no docs, sources or other targets).
    cp -a "$sysroot/lib" "$work/ctx/toolchain/lib"
    target=$(rustc -vV | sed -n 's/^host: //p')
    for dir in "$work/ctx/toolchain/lib/rustlib/"*; do
        case $(basename "$dir") in
        "$target" | etc) ;;
        *) [ -d "$dir" ] && rm -rf "$dir" ;;
        esac
    done
    cp "$here/rust.Dockerfile" "$work/ctx/Dockerfile"
    docker build --quiet --build-arg "BASE=$RUNTIME_IMAGE" -t "$RUST_IMAGE" "$work/ctx" > /dev/null
fi
echo "$RUNTIME_IMAGE $RUST_IMAGE"
