# Shared by every maintainer script of the .deb and the .rpm (the packaging
# code puts it after the "#!/bin/sh" line of each).
NAME=iofog-connector
SVC_USER=iofog-connector
ETC=/etc/iofog-connector
LOGDIR=/var/log/iofog-connector
SHARE=/usr/share/iofog-connector
UNIT=iofog-connector.service
INIT=/etc/init.d/iofog-connector
[ -e "$INIT" ] || INIT=/etc/rc.d/init.d/iofog-connector
PIDFILE=/run/iofog-connector.pid

has_systemd() {
	[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# debian_adduser: Debian's adduser, not the RPM family's alias of useradd.
debian_adduser() {
	[ -e /etc/adduser.conf ] && command -v adduser >/dev/null 2>&1
}

ensure_user() {
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	if ! getent group "$SVC_USER" >/dev/null 2>&1; then
		if debian_adduser; then
			addgroup --system --quiet "$SVC_USER"
		else
			groupadd -r "$SVC_USER"
		fi
	fi
	if ! getent passwd "$SVC_USER" >/dev/null 2>&1; then
		if debian_adduser; then
			adduser --system --quiet --ingroup "$SVC_USER" --no-create-home \
				--home /nonexistent --shell "$nologin" "$SVC_USER"
		else
			useradd -r -g "$SVC_USER" -M -d /nonexistent -s "$nologin" \
				-c "ioFog Connector" "$SVC_USER"
		fi
	fi
}

remove_user() {
	if getent passwd "$SVC_USER" >/dev/null 2>&1; then
		if debian_adduser && command -v deluser >/dev/null 2>&1; then
			deluser --system --quiet "$SVC_USER" || true
		else
			userdel "$SVC_USER" || true
		fi
	fi
	if getent group "$SVC_USER" >/dev/null 2>&1; then
		if debian_adduser && command -v delgroup >/dev/null 2>&1; then
			delgroup --system --quiet "$SVC_USER" || true
		else
			groupdel "$SVC_USER" || true
		fi
	fi
}

# ensure_state gives the daemon its directories and an empty mapping store.
# It never replaces a store: a missing configs.json beside a configs.json.prev
# is a crash the daemon recovers from, so that counts as present too.
ensure_state() {
	mkdir -p "$ETC" "$LOGDIR"
	chown "$SVC_USER:$SVC_USER" "$ETC" "$LOGDIR"
	chmod 0750 "$ETC" "$LOGDIR"
	if [ ! -e "$ETC/configs.json" ] && [ ! -e "$ETC/configs.json.prev" ]; then
		cp "$SHARE/configs.json.empty" "$ETC/configs.json"
		chmod 0640 "$ETC/configs.json"
	fi
	# Files the daemon rewrites or must read, including those left by a
	# Connector that ran as root (the original did), belong to its user.
	for f in configs.json configs.json.prev server-cert.pem server-key.pem; do
		[ -e "$ETC/$f" ] && chown "$SVC_USER:$SVC_USER" "$ETC/$f"
	done
	return 0
}

is_running() {
	if has_systemd; then
		systemctl is-active --quiet "$UNIT"
	else
		[ -x "$INIT" ] && _SYSTEMCTL_SKIP_REDIRECT=1 "$INIT" status >/dev/null 2>&1
	fi
}

restart_service() {
	if has_systemd; then
		systemctl restart "$UNIT"
	else
		"$INIT" restart
	fi
}

stop_service() {
	if has_systemd; then
		systemctl stop "$UNIT" || true
	elif [ -x "$INIT" ]; then
		"$INIT" stop || true
	fi
}

# enable_service makes the service start at boot, under systemd or SysV init.
enable_service() {
	if command -v systemctl >/dev/null 2>&1; then
		systemctl enable --quiet "$UNIT" 2>/dev/null || true
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d "$NAME" defaults >/dev/null 2>&1 || true
	elif command -v chkconfig >/dev/null 2>&1; then
		chkconfig --add "$NAME" >/dev/null 2>&1 || true
	fi
}

disable_service() {
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --quiet "$UNIT" 2>/dev/null || true
	fi
	if command -v chkconfig >/dev/null 2>&1 && ! command -v update-rc.d >/dev/null 2>&1; then
		chkconfig --del "$NAME" >/dev/null 2>&1 || true
	fi
}

# first_install_note: a fresh install does not start the daemon, because in
# the default dev mode its API has no authentication and listens on every
# interface; the user decides when (and in which mode) it runs.
first_install_note() {
	echo "iofog-connector is installed and enabled at boot, but not started."
	echo "Review $ETC/iofog-connector.conf (dev mode is plain HTTP on port 8080), then:"
	echo "  service iofog-connector start"
}
