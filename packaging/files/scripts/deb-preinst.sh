# The user exists before dpkg unpacks files owned by it.
case "$1" in
install | upgrade)
	ensure_user
	;;
esac
exit 0
