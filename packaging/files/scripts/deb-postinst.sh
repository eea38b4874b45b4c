case "$1" in
configure)
	ensure_user
	ensure_state
	if has_systemd; then
		systemctl daemon-reload || true
	fi
	if [ -z "$2" ]; then
		enable_service
		first_install_note
	elif is_running; then
		# Upgrade: prerm left the old daemon running; restart it on the new
		# binary. Mappings are on disk and come back on the same ports.
		echo "Restarting iofog-connector on the new version"
		restart_service
	fi
	;;
esac
exit 0
