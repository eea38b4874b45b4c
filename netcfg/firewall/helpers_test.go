package firewall_test

import "github.com/vishvananda/netlink"

func netlinkAddr(cidr string) (*netlink.Addr, error) { return netlink.ParseAddr(cidr) }
