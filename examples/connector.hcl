# iofog-connector configuration, HCL format.
#
# Put this file on the appliance's boot partition as connector.hcl, or check
# it on any machine with:   iofog-connector validate connector.hcl
#
# These settings are the original Connector's shipped default. Every setting
# below the first five is optional; the values shown are the defaults.

# The five settings of the original iofog-connector.conf (all required).
ports   = ["6000-6050"] # pool for mappings: "N" or "A-B"
exclude = []            # ports removed from the pool
broker  = 12345
address = "127.0.0.1"   # where the local command line reaches the API
dev     = true          # false: HTTPS API on 443 and TLS on data ports

# Appliance settings.
# The host name; unset, it is DHCP's, else iofog-<last three MAC bytes>.
# hostname = "connector-hall-b"

# With no network block the first Ethernet interface uses DHCP. One block per
# interface; a static address instead:
# network {
#   name      = "eth0"
#   addresses = ["192.168.1.10/24"]
#   gateway   = "192.168.1.1"
#   dns       = ["192.168.1.1"]
#   route {
#     to  = "10.8.0.0/16"
#     via = "192.168.1.254"
#   }
# }

# Time servers; none means the ones DHCP offers, then pool.ntp.org.
# ntp {
#   servers = ["pool.ntp.org"]
# }

# Certificate for dev = false: "auto", "files" or "generate".
tls {
  mode = "auto"
  # names = ["connector.example.com"]
  # ips   = ["192.168.1.10"]
}

firewall {
  # enabled = true   # on for the appliance, off on a plain host, unless set
  rate_limit = 50    # new connections per second per source address
  burst      = 200   # an agent opens 60 connections at once
  # forward {
  #   interface = "eth1"
  #   protocol  = "tcp"
  #   ports     = "8000-8010"
  #   to        = "10.0.0.2"
  # }
}

api {
  listen     = ""   # all addresses
  http_port  = 8080
  https_port = 443
  # Who may use the API and /metrics; left out: everyone.
  # allow = ["192.0.2.10", "10.0.0.0/8"]
  read_timeout = "30s"
  idle_timeout = "2m"
}

log {
  level        = "info" # debug, info, warn, error
  file         = false
  max_size_kib = 1024
}

relay {
  public_wait         = "10s"   # from connecting until paired with an agent connection
  write_timeout       = "60s"   # a peer that stops reading is cut after this
  max_connections     = 16384   # data connections overall (kept below the open-file limit)
  max_unauthenticated = 256     # per agent port, not yet authenticated
  max_waiting         = 256     # per public mapping, not yet paired
  log_interval        = "10s"   # peer-caused log lines: one summary per interval
}
