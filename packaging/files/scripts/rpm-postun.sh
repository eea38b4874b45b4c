# RPM has no purge: on erase the settings, mapping store, TLS files, logs and
# the service user stay (as RPM packages do); see the README to remove them.
if [ "$1" -eq 0 ] && has_systemd; then
	systemctl daemon-reload || true
fi
exit 0
