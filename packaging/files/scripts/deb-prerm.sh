case "$1" in
remove | deconfigure)
	stop_service
	;;
upgrade | failed-upgrade)
	# Keep serving during the upgrade; the new postinst restarts it.
	;;
esac
exit 0
