#!/usr/bin/env bash
# The README's commands on a truly fresh Debian 12 that has only Python (and make, which
# the README asks for, installed here as the README says): a minbase debootstrap with python3, a fresh clone of this repo,
# then `make demo` (or the target given, e.g. `test`) inside a chroot, as root.
# Not part of `make test` (it downloads a system and builds with Debian's rustc 1.63).
#
# Usage (as root): tests/packaging/fresh_debian.sh DIR [make-target...]
# DIR is reused if it already holds the system (then no longer fresh: what earlier runs
# installed stays); the clone is made anew each run.
set -euo pipefail

root=${1:?usage: fresh_debian.sh DIR [make-target...]}
shift
targets=("${@:-demo}")
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

fresh=":"
if [ ! -x "$root/usr/bin/python3" ]; then
    fresh="! command -v cc && ! command -v cargo"  # only python3 there yet: check it
    debootstrap --variant=minbase --include=python3,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian
fi
# The host's CA bundle and resolver, so pip and cargo reach their registries as here.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/src/meetq"
mkdir -p "$root/src"
git clone -q "$repo" "$root/src/meetq"

mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
for fs in proc sys dev dev/pts; do
    mount --bind "/$fs" "$root/$fs"
    mounted+=("$root/$fs")
done

# Nothing of the host's toolchains: Debian's PATH, no pyenv, no rustup.
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8 \
    sh -c "cd /src/meetq && python3 --version && $fresh &&
        { command -v make || { apt-get update -qq && apt-get install -y -qq make; }; } &&
        make ${targets[*]}"
