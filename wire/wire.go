// Package wire holds the byte-level facts of the ioFog 1.x data plane that
// both ends share: the Connector (relay) and the agent-side tunnel. It has no
// behaviour, so either side can import it without importing the other.
package wire

const (
	// PasscodeLen is the length of a mapping passcode (a UUID string), sent
	// by an agent-side client first thing on a data connection.
	PasscodeLen = 36
	// Authorized is the Connector's answer to a matching passcode.
	Authorized = "AUTHORIZED"
	// Beat is the heartbeat an agent-side client sends and the Connector
	// echoes. A read that is exactly Beat or Beat+Beat is a heartbeat, not
	// payload.
	Beat = "BEAT"
	// TxEnd ends each IoMessage on a private route between two agents.
	TxEnd = "TXEND"
	// Ack is what a receiver of a bare IoMessage on a private route sends
	// back once it has taken the message.
	Ack = "ACK"
)

// IsBeat reports whether a chunk read from a data connection is a heartbeat
// (one BEAT or two merged in one read) rather than payload.
func IsBeat(b []byte) bool {
	return (len(b) == 4 && string(b) == Beat) || (len(b) == 8 && string(b) == Beat+Beat)
}
