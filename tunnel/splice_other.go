//go:build !linux

package tunnel

import "net"

const canSplice = false

func (c *conn) spliceToLocal(local *net.TCPConn) error   { panic("no splice here") }
func (c *conn) spliceFromLocal(local *net.TCPConn) error { panic("no splice here") }
