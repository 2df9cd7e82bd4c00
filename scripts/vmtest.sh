#!/usr/bin/env bash
# The stock-kernel lane: runs the tests marked `stock_kernel` (netem, Open vSwitch, RTT replay) under
# Debian's stock distribution kernel in a VM, as root. Users' kernels have netem and OVS; the CI
# machine's kernel may not, so this boots linux-image-amd64 with virtme-ng (KVM when it works, else
# TCG) on a read-only view of this machine's files: the project and its .venv are used as they are.
#
#   sudo bash scripts/vmtest.sh [--bench] [pytest args...]      e.g. -k delay
#   (--bench: also run benchmarks/rtt_replay.py in the VM and print its figures)
#
# Exit status: 0 passed; pytest's status when a test inside the VM failed; 77 when the VM could not
# be set up for an environmental reason (no qemu, apt or PyPI unreachable, the VM did not boot): the
# reason is printed loudly and the stock-kernel tests did NOT run.
# Env: TESTBED_VM_CACHE (default /var/lib/testbed-vmtest: kernel, virtme-ng venv; not under
# /var/cache, which the VM hides), TESTBED_VM_TIMEOUT (s, default 1200), TESTBED_VM_MEMORY (2G).
# Nothing is installed into the host's /lib/modules: the VM mounts the cached modules itself.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ENV_SKIP=77

BENCH=0
if [ "${1:-}" = "--bench" ]; then  # also run benchmarks/rtt_replay.py in the VM, after the tests
    BENCH=1
    shift
fi
if [ "${1:-}" = "--guest" ]; then
    # ---- inside the VM: load the modules, start OVS, run pytest; the status goes to $OUT/rc
    OUT=$2
    BENCH=$3
    shift 3
    echo "booted $(uname -r)" > "$OUT/booted"
    exec >> "$OUT/guest.log" 2>&1
    export PATH=/usr/sbin:/sbin:$PATH
    for m in sch_netem sch_htb sch_tbf veth bridge openvswitch; do
        modprobe "$m" || echo "vmtest (guest): modprobe $m failed"
    done
    if command -v ovsdb-server >/dev/null && lsmod | grep -q '^openvswitch'; then
        # OVS userspace with a throw-away database (the host's /etc is read-only here)
        mkdir -p /run/openvswitch /tmp/ovs
        ovsdb-tool create /tmp/ovs/conf.db /usr/share/openvswitch/vswitch.ovsschema
        ovsdb-server /tmp/ovs/conf.db --remote=punix:/run/openvswitch/db.sock --pidfile=/tmp/ovs/db.pid \
            --detach --log-file=/tmp/ovs/ovsdb.log
        ovs-vsctl --no-wait init
        ovs-vswitchd --pidfile=/tmp/ovs/vswitchd.pid --detach --log-file=/tmp/ovs/vswitchd.log \
            || echo "vmtest (guest): ovs-vswitchd did not start"
    fi
    cd "$REPO"
    {
        # (not 'testbed doctor': a Python start costs minutes on a loaded emulated CPU; pytest probes the same)
        lsmod | grep -E '^(sch_netem|openvswitch) ' || true
        # the project is read-only in the VM: no cache, no bytecode
        export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
        # numpy's AVX2 (x86-64-v3) kernels run on QEMU's TCG emulation of AVX2: one run segfaulted in
        # np.argsort there (docs/stock-kernel.md); the SSE4.2 baseline kernels are plenty for 1,000 probes
        export NPY_DISABLE_CPU_FEATURES=X86_V3
        # torch (the OVS session test's models) likewise: ATen's and oneDNN's SSE4.x kernels, not AVX2
        export ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41
        t0=$(date +%s)
        # pytest's cache goes to the shared read-write folder: a failed timing test is run once more
        # (--last-failed), loudly, since an emulated CPU's scheduling noise can fail one probe window
        .venv/bin/python -m pytest -o cache_dir="$OUT/pytest-cache" -rA --durations=0 -m stock_kernel \
            tests/test_stock_kernel.py "$@"
        status=$?
        if [ "$status" != 0 ] && [ "$status" != 5 ]; then  # failed or crashed (5: nothing collected)
            echo "vmtest (guest): RETRYING the failed stock-kernel tests once (first run failed, see above)"
            .venv/bin/python -m pytest -o cache_dir="$OUT/pytest-cache" -ra --last-failed --last-failed-no-failures none \
                -m stock_kernel tests/test_stock_kernel.py "$@"
            status=$?
            echo "vmtest (guest): retry status $status"
        fi
        echo "vmtest (guest): pytest took $(( $(date +%s) - t0 )) s"
        if [ "$BENCH" = 1 ]; then
            .venv/bin/python benchmarks/rtt_replay.py || status=1
        fi
        echo "$status" > "$OUT/rc"
    } >> "$OUT/guest.log" 2>&1
    exit 0
fi

env_fail() {
    echo "" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!!! vmtest: the stock-kernel VM could not be set up: $*" >&2
    echo "!!! the tests marked stock_kernel (netem, OVS, RTT replay) did NOT run" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit $ENV_SKIP
}

[ "$(id -u)" -eq 0 ] || { echo "vmtest.sh: run as root (sudo bash scripts/vmtest.sh)" >&2; exit 1; }
[ -x .venv/bin/python ] || { echo "vmtest.sh: no .venv; run sudo bash scripts/install.sh first" >&2; exit 1; }
CACHE=${TESTBED_VM_CACHE:-/var/lib/testbed-vmtest}
mkdir -p "$CACHE" || env_fail "cannot create $CACHE"

# ---- host packages: qemu, kmod (depmod/modprobe), busybox (virtme's initramfs); OVS where installable
missing=""
for p in qemu-system-x86 kmod busybox-static file; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
    echo ">> apt-get install$missing"
    apt-get update -qq || env_fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || env_fail "apt-get install$missing failed"
fi
if ! dpkg -s openvswitch-switch >/dev/null 2>&1; then
    # the host's service is not started by this (policy-rc.d/no systemd) and nothing is configured
    apt-get install -y -qq --no-install-recommends openvswitch-switch >/dev/null 2>&1 \
        || echo "vmtest: openvswitch-switch not installable; OVS tests will skip in the VM"
fi
command -v qemu-system-x86_64 >/dev/null || env_fail "qemu-system-x86_64 not found after install"

# ---- the stock kernel: the package linux-image-amd64 points to, unpacked into the cache
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || { apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
[ -n "$KPKG" ] || env_fail "apt knows no linux-image-amd64 (not a Debian archive?)"
KVER=${KPKG#linux-image-}
KROOT=$CACHE/kernel-$KVER
if [ ! -f "$KROOT/boot/vmlinuz-$KVER" ]; then
    echo ">> apt-get download $KPKG"
    rm -rf "$KROOT" "$CACHE"/dl && mkdir -p "$CACHE/dl"
    (cd "$CACHE/dl" && apt-get download "$KPKG" >/dev/null 2>&1) || env_fail "apt-get download $KPKG failed"
    dpkg -x "$CACHE"/dl/*.deb "$KROOT" || env_fail "dpkg -x of $KPKG failed"
    rm -rf "$CACHE/dl"
fi
# modules.dep is made by the package's postinst, which dpkg -x does not run
[ -f "$KROOT/lib/modules/$KVER/modules.dep" ] || depmod -a -b "$KROOT" "$KVER" || env_fail "depmod failed"

# ---- virtme-ng in its own venv (not the project's)
VNG_VERSION=1.42
if [ ! -x "$CACHE/venv/bin/vng" ] || [ "$("$CACHE/venv/bin/vng" --version 2>/dev/null)" != "virtme-ng $VNG_VERSION" ]; then
    echo ">> pip install virtme-ng==$VNG_VERSION into $CACHE/venv"
    rm -rf "$CACHE/venv"
    python3 -m venv "$CACHE/venv" || env_fail "python3 -m venv failed"
    "$CACHE/venv/bin/pip" install -q "virtme-ng==$VNG_VERSION" >/dev/null || env_fail "pip install virtme-ng failed"
fi
export PATH=$CACHE/venv/bin:$PATH

# ---- boot: KVM when it works here, else TCG (slower; the tests measure medians for that)
OUT=$(mktemp -d /tmp/testbed-vmtest.XXXXXX)
CONSOLE=$OUT-console.log
trap 'rm -rf "$OUT" "$CONSOLE"' EXIT
boot() {  # $1: extra vng flag ("" for KVM, --disable-kvm for TCG), $2: boot deadline (s); the rest: pytest
    local flag=$1 boot_timeout=$2
    shift 2
    rm -f "$OUT"/*
    timeout --kill-after=30 "${TESTBED_VM_TIMEOUT:-1200}" \
        vng -v -r "$KROOT/boot/vmlinuz-$KVER" $flag --memory "${TESTBED_VM_MEMORY:-2G}" --cpus 2 \
        --rwdir "$OUT" --exec "bash $REPO/scripts/vmtest.sh --guest $OUT $BENCH ${*:+$(printf '%q ' "$@")}" \
        > "$CONSOLE" 2>&1 < /dev/null &
    local vm=$!
    # a boot that hangs (KVM here fails on an MSR) must not eat the time budget. A kernel that runs
    # prints "Linux version" right after the boot stub's "Probing EDD" (under TCG on the same line);
    # the hung KVM boot prints only NUL bytes after it, so under KVM 8 s without it is a hang, not slowness
    local deadline=$(( $(date +%s) + boot_timeout )) edd_seen=
    while [ ! -f "$OUT/booted" ] && kill -0 $vm 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "vmtest: no boot within $boot_timeout s; stopping this VM"
            kill $vm 2>/dev/null
            break
        fi
        if [ -z "$flag" ] && [ -z "$edd_seen" ] && grep -aq "Probing EDD" "$CONSOLE"; then
            edd_seen=$(date +%s)
        fi
        if [ -n "$edd_seen" ] && [ "$(( $(date +%s) - edd_seen ))" -ge 8 ] && ! grep -aq "Linux version" "$CONSOLE"; then
            echo "vmtest: the kernel printed nothing 8 s after the boot stub (a hung boot); stopping this VM"
            kill $vm 2>/dev/null
            break
        fi
        sleep 1
    done
    # the guest's output, as it comes (the shared folder is synchronous)
    if [ -f "$OUT/booted" ]; then
        touch "$OUT/guest.log"
        tail -n +1 -F --pid=$vm "$OUT/guest.log" 2>/dev/null &
        local tailer=$!
    fi
    wait $vm
    vng_status=$?
    [ -n "${tailer:-}" ] && { sleep 1; kill "$tailer" 2>/dev/null; wait "$tailer" 2>/dev/null; }
    return 0
}
t_start=$(date +%s)
accel=TCG
vng_status=
if [ -w /dev/kvm ] && [ -z "${TESTBED_VM_NO_KVM:-}" ]; then
    echo ">> booting $KPKG with KVM"
    boot "" 30 "$@"  # KVM boots in seconds where it works (TCG: ~20 s); here it hangs after "Probing EDD"
    if [ -f "$OUT/booted" ]; then accel=KVM; else echo "vmtest: KVM boot failed here; falling back to TCG"; fi
fi
if [ ! -f "$OUT/booted" ]; then
    echo ">> booting $KPKG under TCG (no KVM)"
    boot --disable-kvm "${TESTBED_VM_BOOT_TIMEOUT:-400}" "$@"
fi
if [ ! -f "$OUT/booted" ]; then
    tail -n 40 "$CONSOLE" >&2
    env_fail "the VM with $KPKG did not boot (vng status ${vng_status:-?})"
fi
if [ ! -f "$OUT/rc" ]; then
    echo "vmtest: the VM booted but the tests did not finish (timeout or crash inside the VM):" >&2
    grep '^\[ *[0-9]*\.[0-9]*\]' "$CONSOLE" | tail -n 20 >&2
    exit 1
fi
rc=$(cat "$OUT/rc")
echo "vmtest: stock kernel $KVER ($accel), pytest status $rc, $(( $(date +%s) - t_start )) s"
exit "$rc"
