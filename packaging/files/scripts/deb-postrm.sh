case "$1" in
remove)
	if has_systemd; then
		systemctl daemon-reload || true
	fi
	disable_service
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d "$NAME" remove >/dev/null 2>&1 || true
	fi
	;;
purge)
	# Purge means everything: settings, mapping store, TLS key and
	# certificate, logs, and the service user. "remove" keeps them.
	rm -f /etc/systemd/system/multi-user.target.wants/$UNIT "$PIDFILE"
	rm -rf "$ETC" "$LOGDIR"
	remove_user
	;;
esac
exit 0
