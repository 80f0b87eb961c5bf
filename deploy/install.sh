#!/bin/sh
# Install, upgrade or remove the gateway on a Raspberry Pi (Raspberry Pi OS or
# Debian bookworm, arm64 or armhf; amd64 works too). Run as root from a checkout:
#
#   sudo deploy/install.sh [--no-train]        install, or upgrade in place
#   sudo deploy/install.sh --uninstall [--purge]
#
# Layout: code and venv in /opt/wdn-gateway, configuration in
# /etc/wdn-gateway/site.toml (never overwritten), the store and models in
# /var/lib/wdn-gateway (never touched but by --purge), the unit
# /etc/systemd/system/wdn-gateway.service, the operator command
# /usr/local/bin/wdn-gateway. Service user: wdn (group dialout for the ports).
set -eu

PREFIX=/opt/wdn-gateway
CONF_DIR=/etc/wdn-gateway
STATE_DIR=/var/lib/wdn-gateway
UNIT=/etc/systemd/system/wdn-gateway.service
COMMAND=/usr/local/bin/wdn-gateway
USER_NAME=wdn
# What the service needs from the checkout (tests, benchmarks and the repo's own
# venv stay behind).
PARTS="actors cli core ports storage training conf deploy supervisor.py setup.cfg pyproject.toml README.md"
# armhf has no PyPI wheels for numpy or lmdb: Debian's compiled packages serve
# (the venv sees them); pure-Python pykka comes from PyPI (Debian's is too old).
DEBIAN_32BIT="python3-numpy python3-lmdb python3-msgpack python3-serial"

bad_usage() {
    echo "install.sh: $1 (usage: install.sh [--no-train] | --uninstall [--purge])" >&2
    exit 2
}

say() { echo "install.sh: $*"; }
fail() { echo "install.sh: error: $*" >&2; exit 1; }

train=1
action=install
purge=0
for arg in "$@"; do
    case "$arg" in
        --no-train) train=0 ;;
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) bad_usage "unknown option: $arg" ;;
    esac
done
[ "$purge" = 0 ] || [ "$action" = uninstall ] || bad_usage "--purge goes with --uninstall"
[ "$train" = 1 ] || [ "$action" = install ] || bad_usage "--no-train goes with an install"
[ "$(id -u)" = 0 ] || fail "run as root (sudo $0 $*)"

# systemd runs the machine (not a chroot or an image being built): only then
# are units started, stopped and reloaded; enabling works either way.
if [ -d /run/systemd/system ]; then live_systemd=1; else live_systemd=0; fi

uninstall() {
    if [ "$live_systemd" = 1 ]; then
        systemctl disable --now wdn-gateway.service 2>/dev/null || true
    elif command -v systemctl >/dev/null; then
        systemctl disable wdn-gateway.service 2>/dev/null || true
    fi
    rm -f "$UNIT" /etc/systemd/system/multi-user.target.wants/wdn-gateway.service "$COMMAND"
    [ "$live_systemd" = 0 ] || systemctl daemon-reload
    rm -rf "$PREFIX"
    say "removed $PREFIX, $UNIT and $COMMAND"
    if [ "$purge" = 1 ]; then
        rm -rf "$STATE_DIR" "$CONF_DIR"
        if id "$USER_NAME" >/dev/null 2>&1; then userdel "$USER_NAME"; fi
        say "purged the store ($STATE_DIR), the configuration ($CONF_DIR) and user $USER_NAME"
    else
        say "kept the store ($STATE_DIR) and the configuration ($CONF_DIR); --purge removes them"
    fi
}

if [ "$action" = uninstall ]; then
    uninstall
    exit 0
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/supervisor.py" ] && [ -f "$SRC/setup.cfg" ] || fail "run install.sh from a checkout ($SRC has no supervisor.py)"
# The install replaces $PREFIX's code: it cannot be its own source.
[ "$SRC" != "$PREFIX" ] || fail "run install.sh from a checkout elsewhere than $PREFIX (e.g. ~/wdn-gateway)"
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
bits=$(getconf LONG_BIT)
if [ "$bits" = 32 ] && [ "$train" = 1 ]; then
    say "no TensorFlow for $arch: installing without training (forecasts use models trained" \
        "elsewhere, copied into the models directory, or seasonal-naive)"
    train=0
fi
upgrade=0
[ -d "$PREFIX/.venv" ] && upgrade=1

# -- system packages (apt only for what is missing, so an upgrade needs no network)
needed="python3 python3-venv"
[ "$bits" = 64 ] || needed="$needed $DEBIAN_32BIT"
missing=""
for pkg in $needed; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# -- service user --------------------------------------------------------------
if id "$USER_NAME" >/dev/null 2>&1; then
    usermod -a -G dialout "$USER_NAME"
else
    useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
        --user-group --groups dialout "$USER_NAME"
    say "created system user $USER_NAME (groups: $USER_NAME, dialout)"
fi

# -- code: replaced as a whole (nothing of an old version lingers); the venv stays
was_running=0
if [ "$live_systemd" = 1 ] && systemctl is-active --quiet wdn-gateway.service; then
    was_running=1
fi
mkdir -p "$PREFIX"
for part in $PARTS; do rm -rf "${PREFIX:?}/$part"; done
(cd "$SRC" && tar -cf - --exclude=__pycache__ $PARTS) | (cd "$PREFIX" && tar -xf -)
version=$(sed -n 's/^version *= *//p' "$SRC/setup.cfg")
commit=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
echo "$version ($commit) of $(date -u +%Y-%m-%dT%H:%MZ)" > "$PREFIX/VERSION"
chown -R root:root "$PREFIX"

# -- venv and Python packages ---------------------------------------------------
venv_args=""
[ "$bits" = 64 ] || venv_args="--system-site-packages"
if ! "$PREFIX/.venv/bin/python" -c "" 2>/dev/null; then
    python3 -m venv $venv_args "$PREFIX/.venv"
fi
# The dependencies only: the service runs from $PREFIX (WorkingDirectory), so
# the package itself need not be built.
requirements=$(python3 - "$PREFIX/setup.cfg" "$train" <<'EOF'
import configparser, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = cfg["options"]["install_requires"].splitlines()
if sys.argv[2] == "1":
    lines += cfg["options.extras_require"]["train"].splitlines()
print("\n".join(line.strip() for line in lines if line.strip()))
EOF
)
echo "$requirements" > "$PREFIX/requirements.txt"
say "installing Python packages into $PREFIX/.venv$( [ "$bits" = 64 ] || echo ' (with Debian numpy, lmdb, msgpack, pyserial)')"
# Wheels only: building numpy or lmdb from source on a Pi takes hours and
# usually fails; better a clear error at once.
"$PREFIX/.venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
    --only-binary=:all: -r "$PREFIX/requirements.txt" \
    || fail "pip could not install $(echo $requirements | tr '\n' ' ')"
"$PREFIX/.venv/bin/python" -c "import numpy, lmdb, msgpack, serial, pykka" \
    || fail "the venv cannot import the service's packages"

# -- configuration and state ----------------------------------------------------
mkdir -p "$CONF_DIR"
if [ -e "$CONF_DIR/site.toml" ]; then
    say "kept $CONF_DIR/site.toml; the current template is $CONF_DIR/site.toml.example"
else
    cp "$PREFIX/conf/pi.toml" "$CONF_DIR/site.toml"
    say "wrote $CONF_DIR/site.toml from conf/pi.toml: edit site.name, serial.port, upstream.port"
fi
cp "$PREFIX/conf/pi.toml" "$CONF_DIR/site.toml.example"
chown root:"$USER_NAME" "$CONF_DIR/site.toml"
chmod 0640 "$CONF_DIR/site.toml"
mkdir -p "$STATE_DIR"
chown "$USER_NAME:$USER_NAME" "$STATE_DIR"
chmod 0750 "$STATE_DIR"

# The operator's command: the service's own venv, working directory, config
# and user, so `wdn-gateway status` reads what the service writes.
cat > "$COMMAND" <<EOF
#!/bin/sh
# wdn-gateway operator command (written by deploy/install.sh): runs supervisor.py
# as the service does. Examples: wdn-gateway status; wdn-gateway --check-config
cd $PREFIX || exit 1
if [ "\$(id -u)" = 0 ]; then
    # setpriv execs (no session process between): signals reach the gateway
    # and its exit code comes back.
    exec setpriv --reuid=$USER_NAME --regid=$USER_NAME --init-groups -- \
        $PREFIX/.venv/bin/python supervisor.py --config $CONF_DIR/site.toml "\$@"
fi
exec $PREFIX/.venv/bin/python supervisor.py --config $CONF_DIR/site.toml "\$@"
EOF
chmod 0755 "$COMMAND"

config_ok=1
if ! check=$("$COMMAND" --check-config 2>&1); then
    config_ok=0
fi
echo "$check" | sed 's/^/install.sh: /'

# -- systemd unit ----------------------------------------------------------------
cp "$PREFIX/deploy/wdn-gateway.service" "$UNIT"
chmod 0644 "$UNIT"
if command -v systemctl >/dev/null; then
    [ "$live_systemd" = 0 ] || systemctl daemon-reload
    # Outside a running systemd (chroot, image build) this only links the unit.
    systemctl enable wdn-gateway.service 2>&1 | sed 's/^/install.sh: /'
else
    mkdir -p /etc/systemd/system/multi-user.target.wants
    ln -sf "$UNIT" /etc/systemd/system/multi-user.target.wants/wdn-gateway.service
fi
say "unit $UNIT installed and enabled (starts at boot)"
if [ "$live_systemd" = 0 ]; then
    say "systemd is not running here (chroot or image): nothing was started"
fi

if [ "$upgrade" = 1 ]; then
    say "upgraded $PREFIX to wdn-gateway $(cat "$PREFIX/VERSION"); store and configuration kept"
else
    say "installed wdn-gateway $(cat "$PREFIX/VERSION") into $PREFIX"
fi
if [ "$config_ok" = 0 ]; then
    say "the configuration does not pass with this version: fix $CONF_DIR/site.toml, then"
    echo "  wdn-gateway --check-config && systemctl restart wdn-gateway"
    exit 1
fi
if [ "$was_running" = 1 ]; then
    systemctl restart wdn-gateway.service
    say "restarted the running service on the new version"
    echo "next: journalctl -u wdn-gateway -f"
else
    echo "next: edit $CONF_DIR/site.toml, then"
    echo "  wdn-gateway --check-config && systemctl start wdn-gateway && journalctl -u wdn-gateway -f"
fi
