#!/usr/bin/env bash
# The vmpool demo (make demo): a file-reflink pool on a loop-mounted btrfs
# image, a template and an AppVM with their volumes, a few starts and
# stops, the revisions they leave, and a revert. Everything it makes is
# removed at the end, whatever happens. Needs root, btrfs-progs and the
# vmpoolctl binary given as $1.
set -euo pipefail

ctl=$(realpath "${1:?usage: demo.sh path/to/vmpoolctl}")
work=$(mktemp -d /tmp/vmpool-demo.XXXXXX)
img=$work/btrfs.img
mnt=$work/mnt
state=$work/state
loop=""

cleanup() {
	set +e
	mountpoint -q "$mnt" && umount "$mnt"
	[ -n "$loop" ] && losetup --detach "$loop"
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ vmpoolctl %s\n' "$*"; "$ctl" --state "$state" "$@"; }
tree() { (cd "$mnt/pool" && find . -path ./lost+found -prune -o -type f -printf '%P  %s bytes, %k KiB allocated\n' | sort); }
# put writes a line at the start of a running volume's image, as its VM would.
put() { printf '%-64s\n' "$2" | dd of="$mnt/pool/$1-dirty.img" conv=notrunc status=none; }
# get reads that line back from a file of the pool.
get() { head -c 64 "$mnt/pool/$1" | tr -d ' '; echo; }

say "A 2 GiB btrfs filesystem on a loop device"
truncate -s 2G "$img"
mkfs.btrfs -q "$img"
loop=$(losetup --find --show "$img")
mkdir -p "$mnt"
mount "$loop" "$mnt"
echo "$loop mounted on $mnt ($(stat -f -c %T "$mnt"))"

say "A file-reflink pool that keeps 3 revisions per volume"
run pool add demo file-reflink dir_path="$mnt/pool" revisions_to_keep=3
run pool info demo

say "A template (fedora) and an AppVM (work) based on it"
run volume create demo vm-templates/fedora/root --size 1GiB --rw --save-on-stop
run volume create demo vm-templates/fedora/private --size 512MiB --rw --save-on-stop
run volume create demo appvms/work/root --size 1GiB --snap-on-start --source vm-templates/fedora/root
run volume create demo appvms/work/private --size 2GiB --rw --save-on-stop
run volume create demo appvms/work/volatile --size 1GiB --rw --volatile
run vm list

say "Start work: private runs on private-dirty.img, root is a reflink of the template's root"
run vm start work
tree

for n in 1 2 3 4; do
	say "work writes 'version $n' to its private volume and stops"
	put appvms/work/private "version $n"
	run vm stop work
	run vm start work
done
run vm stop work
tree

say "Revisions of work's private volume (oldest first; 3 are kept)"
run volume revisions demo appvms/work/private
printf 'current content: '; get appvms/work/private.img

say "Revert to revision 3: the current state becomes a new revision"
run volume revert demo appvms/work/private 3
printf 'content after revert: '; get appvms/work/private.img
run volume revisions demo appvms/work/private

say "Grow the private volume while work runs, then stop it"
run vm start work
run volume resize demo appvms/work/private 3GiB
run vm stop work
run volume info demo appvms/work/private

say "The template is updated; work's root snapshot sees it after its next start"
run vm start work
run volume start demo vm-templates/fedora/root
put vm-templates/fedora/root "fedora 42 update"
run volume stop demo vm-templates/fedora/root
run volume info demo appvms/work/root
run vm stop work

say "Clean up"
run volume remove demo appvms/work/volatile
run volume remove demo appvms/work/root
run volume remove demo appvms/work/private
run volume remove demo vm-templates/fedora/private
run volume remove demo vm-templates/fedora/root
run pool remove demo
tree
echo "demo done"
