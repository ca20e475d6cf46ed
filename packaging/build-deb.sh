#!/usr/bin/env bash
# Builds the reposafe .deb with dpkg-deb from a release binary and the files
# in packaging/: no cargo-deb, no debhelper, every byte of the package is
# visible here.
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR]
#
#   --binary PATH  the reposafe executable (default: target/release/reposafe)
#   --out DIR      where the .deb goes (default: target/debian)
#
# Environment: DEB_REVISION (default 1), DEB_MAINTAINER (default: reposafe
# developers <dev@reposafe.invalid>), SOURCE_DATE_EPOCH (default: the last commit's time;
# makes the package reproducible).
# Needs: dpkg-deb, dpkg-shlibdeps (package dpkg-dev), strip (binutils), gzip.
# Prints the path of the built .deb as its last line.
set -euo pipefail

die() { echo "build-deb.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
binary=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#--binary=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    -h|--help) sed -n "2,15p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (expected --binary PATH or --out DIR)" ;;
  esac
done
# Relative paths are relative to the caller's directory.
binary=${binary:-$repo/target/release/reposafe}
out=${out:-$repo/target/debian}
case "$binary" in /*) ;; *) binary=$PWD/$binary ;; esac
case "$out" in /*) ;; *) out=$PWD/$out ;; esac

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils gzip)"
done
[ -f "$binary" ] || die "binary $binary does not exist (run: cargo build --release --bin reposafe, or pass --binary PATH)"
[ -x "$binary" ] || die "binary $binary is not executable"
[ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = '177ELF' ] || die "binary $binary is not an ELF executable"

# Version: Cargo.toml's [package] version; a semver pre-release (1.0.0-rc.1)
# becomes 1.0.0~rc.1 so that it sorts before 1.0.0 in dpkg.
cargo_version=$(sed -n '/^\[package\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' "$repo/Cargo.toml" | head -n 1)
[ -n "$cargo_version" ] || die "no version in the [package] section of $repo/Cargo.toml"
upstream_version=${cargo_version//-/\~}
upstream_version=${upstream_version%%+*}
revision=${DEB_REVISION:-1}
version="$upstream_version-$revision"
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
maintainer=${DEB_MAINTAINER:-reposafe developers <dev@reposafe.invalid>}

# A binary that runs here must report the version it is packaged as.
if reported=$("$binary" --version 2>/dev/null); then
  [ "$reported" = "reposafe $cargo_version" ] ||
    die "binary $binary reports '$reported' but Cargo.toml says $cargo_version (stale build?)"
fi

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
changelog_date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
man_date=$(LC_ALL=C date -u +%Y-%m-%d -d "@$SOURCE_DATE_EPOCH")
year=$(date -u +%Y -d "@$SOURCE_DATE_EPOCH")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022
root=$work/debian/reposafe
doc=$root/usr/share/doc/reposafe

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
  "$root/etc/reposafe" "$doc" "$root/usr/share/man/man1"

# The executable, stripped like dh_strip does.
strip --strip-all --remove-section=.comment --remove-section=.note \
  -o "$root/usr/bin/reposafe" "$binary"
chmod 0755 "$root/usr/bin/reposafe"

install -m 0644 "$here/reposafe.service" "$root/usr/lib/systemd/system/reposafe.service"
install -m 0644 "$here/reposafe.toml" "$root/etc/reposafe/reposafe.toml"
install -m 0644 "$here/README.md" "$doc/README.md"
sed "s/@YEAR@/$year/" "$here/debian/copyright" > "$doc/copyright"
chmod 0644 "$doc/copyright"
sed -e "s/@VERSION@/$cargo_version/" -e "s/@DATE@/$man_date/" "$here/reposafe.1" |
  gzip -9n > "$root/usr/share/man/man1/reposafe.1.gz"
if [ -s "$here/debian/lintian-overrides" ]; then
  install -d "$root/usr/share/lintian/overrides"
  install -m 0644 "$here/debian/lintian-overrides" "$root/usr/share/lintian/overrides/reposafe"
fi
{
  echo "reposafe ($version) unstable; urgency=medium"
  echo
  echo "  * Release $cargo_version."
  echo
  echo " -- $maintainer  $changelog_date"
} | gzip -9n > "$doc/changelog.Debian.gz"

for script in postinst prerm postrm; do
  install -m 0755 "$here/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/reposafe/reposafe.toml > "$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"

# Shared-library dependencies of the binary (libc6, libgcc-s1), as Debian
# computes them: dpkg-shlibdeps wants a debian/control next to debian/<pkg>.
printf 'Source: reposafe\n\nPackage: reposafe\nArchitecture: any\n' > "$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O -e debian/reposafe/usr/bin/reposafe 2>"$work/shlibdeps.err") ||
  die "dpkg-shlibdeps failed: $(cat "$work/shlibdeps.err")"
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no shared-library dependencies for $binary"

# md5sums of everything but conffiles and DEBIAN/ (as dh_md5sums does).
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort |
  xargs -d '\n' md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

installed_size=$(du -k -s --apparent-size --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: reposafe
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: adduser, init-system-helpers (>= 1.54~), $shlibs
Section: admin
Priority: optional
Description: backup appliance for Bitbucket Cloud and Bitbucket Data Center
 reposafe backs up every Git repository of Bitbucket Cloud workspaces and
 Bitbucket Data Center projects into a deduplicated, verified archive, on
 cron schedules, and restores any snapshot into a bare Git repository.
 .
 This package runs the daemon as the system user reposafe under a hardened
 systemd unit, with its data in /var/lib/reposafe, an HTTP API on
 127.0.0.1:8720 and the configuration in /etc/reposafe/reposafe.toml.
 It needs no git installation: Git is implemented in the binary.
EOF
chmod 0644 "$root/DEBIAN/control"

# Reproducible: every file carries the same time stamp.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb=$out/reposafe_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
