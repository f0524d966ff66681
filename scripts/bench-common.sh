# Helpers the bench scripts share (sourced from the project root, not run).

# The value of fsbench's "<metric> <value> <unit>" line.
val() { awk '{print $2}'; }

# $1 / $2 to two decimals.
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }

# fresh_ext4 IMG DIR SIZE [MKFS_ARGS...]: a new ext4 image of SIZE at IMG, loop-mounted on DIR.
# Its inode tables and journal are written up front: left to mkfs's lazy init, a kernel thread
# zeroes them during the first minute after mounting and slows whatever the script runs first.
fresh_ext4() {
  local img=$1 dir=$2 size=$3; shift 3
  truncate -s "$size" "$img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$@" "$img"
  mount -o loop "$img" "$dir"
}

# unmount_and_wait MNT CACHE_DIR: unmount a wombatfs mount and wait for its daemon's clean
# shutdown (it holds the cache dir until then, so a new mount of it must wait).
unmount_and_wait() {
  fusermount3 -u "$1"
  local pid; pid=$(cat "$2/lock" 2>/dev/null || true)
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}
