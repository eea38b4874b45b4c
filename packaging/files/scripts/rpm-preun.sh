# $1: 0 on erase, 1 when this version is being replaced by an upgrade.
if [ "$1" -eq 0 ]; then
	stop_service
	disable_service
fi
exit 0
