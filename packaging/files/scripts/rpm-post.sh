# $1: 1 on install, 2 or more on upgrade (the old version's %preun and
# %postun run after this, with $1 = 1, and leave the daemon alone).
ensure_user
ensure_state
if has_systemd; then
	systemctl daemon-reload || true
fi
if [ "$1" -eq 1 ]; then
	enable_service
	first_install_note
elif is_running; then
	echo "Restarting iofog-connector on the new version"
	restart_service
fi
exit 0
