package config

import (
	"fmt"
	"net"
)

// CheckListener returns an error when a broker with the given number of configured callers may
// not serve gRPC on listen. Without callers, authentication is off and every call is let in as
// the anonymous caller, which is allowed on a loopback address only. With callers, any address is
// allowed. broker serve runs this check before it opens the listener.
func CheckListener(listen string, callers int) error {
	if callers > 0 {
		return nil
	}
	addr, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return fmt.Errorf("invalid listen address %q: %w", listen, err)
	}
	if addr.IP == nil || !addr.IP.IsLoopback() {
		return fmt.Errorf("refusing to serve on %s without authentication: no callers are configured, so anyone who "+
			"reaches the address could take and release any lease; add a callers section to the config "+
			"(docs/security.md) or listen on 127.0.0.1", listen)
	}
	return nil
}
