package tunnel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

// IoMessage is an ioFog message in the fields of its binary encoding
// (version 4), as the agents' SDKs define it. The tunnel itself never
// rebuilds a message: it checks the bytes it receives and passes them on
// unchanged; Encode is for tools and tests.
type IoMessage struct {
	ID, Tag, GroupID              string
	SequenceNumber, SequenceTotal int64
	Priority                      int64
	Timestamp                     int64
	Publisher, AuthID, AuthGroup  string
	ChainPosition                 int64
	Hash, PreviousHash, Nonce     string
	DifficultyTarget              int64
	InfoType, InfoFormat          string
	ContextData, ContentData      []byte
}

// IoMessageVersion is the only binary version the SDKs speak.
const IoMessageVersion = 4

// ioHeaderLen is the fixed header: the version and the length of each field.
const ioHeaderLen = 33

// Codes on the agent's websockets (first byte of each frame).
const (
	codeAck     = 0xB
	codeControl = 0xC
	codeMessage = 0xD
	codeReceipt = 0xE
)

// field kinds in header order: width of the length entry in the header, and
// whether the field is a number.
var ioFields = [...]struct {
	lenBytes int
	number   bool
}{
	{1, false}, // id
	{2, false}, // tag
	{1, false}, // groupid
	{1, true},  // sequence number
	{1, true},  // sequence total
	{1, true},  // priority
	{1, true},  // timestamp
	{1, false}, // publisher
	{2, false}, // auth id
	{2, false}, // auth group
	{1, true},  // chain position
	{2, false}, // hash
	{2, false}, // previous hash
	{2, false}, // nonce
	{1, true},  // difficulty target
	{1, false}, // info type
	{1, false}, // info format
	{4, false}, // context data
	{4, false}, // content data
}

// ioLengths reads the header's field lengths and returns them with the
// message's total length.
func ioLengths(h []byte) (lens [len(ioFields)]int, total int, err error) {
	if len(h) < ioHeaderLen {
		return lens, 0, fmt.Errorf("IoMessage header is %d bytes, want %d", len(h), ioHeaderLen)
	}
	if v := binary.BigEndian.Uint16(h); v != IoMessageVersion {
		return lens, 0, fmt.Errorf("IoMessage version %d, only %d is spoken", v, IoMessageVersion)
	}
	pos, total := 2, ioHeaderLen
	for i, f := range ioFields {
		var n int
		switch f.lenBytes {
		case 1:
			n = int(h[pos])
		case 2:
			n = int(binary.BigEndian.Uint16(h[pos:]))
		case 4:
			n = int(binary.BigEndian.Uint32(h[pos:]))
		}
		if f.number && n > 8 {
			return lens, 0, fmt.Errorf("IoMessage number field %d is %d bytes long, at most 8 allowed", i, n)
		}
		pos += f.lenBytes
		lens[i] = n
		total += n
	}
	return lens, total, nil
}

// IoMessageLen checks an IoMessage header and returns the length of the
// whole message.
func IoMessageLen(h []byte) (int, error) {
	_, total, err := ioLengths(h)
	return total, err
}

// DecodeIoMessage parses one binary IoMessage that fills b exactly.
func DecodeIoMessage(b []byte) (*IoMessage, error) {
	lens, total, err := ioLengths(b)
	if err != nil {
		return nil, err
	}
	if total != len(b) {
		return nil, fmt.Errorf("IoMessage says it is %d bytes long but %d arrived", total, len(b))
	}
	pos := ioHeaderLen
	next := func(i int) []byte {
		v := b[pos : pos+lens[i]]
		pos += lens[i]
		return v
	}
	num := func(i int) int64 {
		var u uint64
		for _, c := range next(i) {
			u = u<<8 | uint64(c)
		}
		return int64(u)
	}
	m := &IoMessage{}
	m.ID = string(next(0))
	m.Tag = string(next(1))
	m.GroupID = string(next(2))
	m.SequenceNumber = num(3)
	m.SequenceTotal = num(4)
	m.Priority = num(5)
	m.Timestamp = num(6)
	m.Publisher = string(next(7))
	m.AuthID = string(next(8))
	m.AuthGroup = string(next(9))
	m.ChainPosition = num(10)
	m.Hash = string(next(11))
	m.PreviousHash = string(next(12))
	m.Nonce = string(next(13))
	m.DifficultyTarget = num(14)
	m.InfoType = string(next(15))
	m.InfoFormat = string(next(16))
	m.ContextData = bytes.Clone(next(17))
	m.ContentData = bytes.Clone(next(18))
	return m, nil
}

// Encode writes m in the binary encoding. Numbers take as few big-endian
// bytes as they need (one zero byte for 0), as the SDKs write them.
func (m *IoMessage) Encode() ([]byte, error) {
	strs := map[int]string{0: m.ID, 1: m.Tag, 2: m.GroupID, 7: m.Publisher, 8: m.AuthID, 9: m.AuthGroup,
		11: m.Hash, 12: m.PreviousHash, 13: m.Nonce, 15: m.InfoType, 16: m.InfoFormat}
	nums := map[int]int64{3: m.SequenceNumber, 4: m.SequenceTotal, 5: m.Priority, 6: m.Timestamp, 10: m.ChainPosition, 14: m.DifficultyTarget}
	header := make([]byte, 2, ioHeaderLen)
	binary.BigEndian.PutUint16(header, IoMessageVersion)
	var body []byte
	for i, f := range ioFields {
		var v []byte
		switch {
		case f.number:
			v = minimalBE(nums[i])
		case i == 17:
			v = m.ContextData
		case i == 18:
			v = m.ContentData
		default:
			v = []byte(strs[i])
		}
		if max := 1<<(8*f.lenBytes) - 1; len(v) > max {
			return nil, fmt.Errorf("IoMessage field %d is %d bytes, at most %d fit", i, len(v), max)
		}
		switch f.lenBytes {
		case 1:
			header = append(header, byte(len(v)))
		case 2:
			header = binary.BigEndian.AppendUint16(header, uint16(len(v)))
		case 4:
			header = binary.BigEndian.AppendUint32(header, uint32(len(v)))
		}
		body = append(body, v...)
	}
	return append(header, body...), nil
}

func minimalBE(n int64) []byte {
	if n == 0 {
		return []byte{0}
	}
	b := binary.BigEndian.AppendUint64(nil, uint64(n))
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// errOutOfStep: the route's bytes are not a sequence of IoMessages.
var errOutOfStep = errors.New("private route out of step: not an IoMessage followed by TXEND")

// readRouteMessage reads one IoMessage and its TXEND from a private route
// and returns the message bytes as they arrived. Two forms exist among the
// agents' network containers and both are read: the bare binary IoMessage
// (acknowledged with ACK by the receiver), and the message wrapped as on the
// agent's websocket (0xD, a 4-byte length, the message; no ACK). framed says
// which one came. ACKs between messages are skipped. A message longer than
// max is refused before it is read.
func readRouteMessage(br *bufio.Reader, max int) (msg []byte, framed bool, err error) {
	for {
		p, err := br.Peek(3)
		if err != nil {
			if err == io.EOF && len(p) == 0 {
				return nil, false, io.EOF
			}
			return nil, false, fmt.Errorf("read IoMessage from the route: %w", noEOF(err))
		}
		if string(p) != "ACK" {
			break
		}
		br.Discard(3)
	}
	if p, _ := br.Peek(1); p[0] == codeMessage {
		framed = true
		h, err := br.Peek(5)
		if err != nil {
			return nil, true, fmt.Errorf("read IoMessage frame from the route: %w", noEOF(err))
		}
		if n := binary.BigEndian.Uint32(h[1:]); uint64(n) > uint64(max) {
			return nil, true, fmt.Errorf("IoMessage of %d bytes on the route, more than the %d allowed", n, max)
		}
		br.Discard(5)
	}
	h, err := br.Peek(ioHeaderLen)
	if err != nil {
		return nil, framed, fmt.Errorf("read IoMessage header from the route: %w", noEOF(err))
	}
	total, err := IoMessageLen(h)
	if err != nil {
		return nil, framed, fmt.Errorf("%w: %v", errOutOfStep, err)
	}
	if total > max {
		return nil, framed, fmt.Errorf("IoMessage of %d bytes on the route, more than the %d allowed", total, max)
	}
	buf := make([]byte, total+len(wire.TxEnd))
	if _, err := io.ReadFull(br, buf); err != nil {
		return nil, framed, fmt.Errorf("read IoMessage from the route: %w", noEOF(err))
	}
	if string(buf[total:]) != wire.TxEnd {
		return nil, framed, fmt.Errorf("%w: %q after the message", errOutOfStep, buf[total:])
	}
	return buf[:total], framed, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// messageFrame is how a message travels on the agent's message websocket.
func messageFrame(msg []byte) []byte {
	f := make([]byte, 5, 5+len(msg))
	f[0] = codeMessage
	binary.BigEndian.PutUint32(f[1:], uint32(len(msg)))
	return append(f, msg...)
}

// parseMessageFrame returns the message in a 0xD frame, checked.
func parseMessageFrame(f []byte, max int) ([]byte, error) {
	if len(f) < 5 || f[0] != codeMessage {
		return nil, errors.New("not a message frame")
	}
	n := binary.BigEndian.Uint32(f[1:5])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("message frame of %d bytes, more than the %d allowed", n, max)
	}
	if int(n) != len(f)-5 {
		return nil, fmt.Errorf("message frame says %d bytes but carries %d", n, len(f)-5)
	}
	msg := f[5:]
	if _, err := DecodeIoMessage(msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// Receipt is the agent's answer to a message posted on its websocket.
type Receipt struct {
	ID        string
	Timestamp int64
}

// ReceiptFrame encodes a receipt as the agent sends it.
func ReceiptFrame(r Receipt) []byte {
	ts := binary.BigEndian.AppendUint64(nil, uint64(r.Timestamp))
	f := []byte{codeReceipt, byte(len(r.ID)), byte(len(ts))}
	f = append(f, r.ID...)
	return append(f, ts...)
}

// parseReceipt decodes a 0xE frame.
func parseReceipt(f []byte) (Receipt, error) {
	if len(f) < 3 || f[0] != codeReceipt {
		return Receipt{}, errors.New("not a receipt frame")
	}
	idLen, tsLen := int(f[1]), int(f[2])
	if tsLen > 8 || len(f) != 3+idLen+tsLen {
		return Receipt{}, fmt.Errorf("receipt frame of %d bytes does not hold an id of %d and a timestamp of %d", len(f), idLen, tsLen)
	}
	var ts uint64
	for _, c := range f[3+idLen:] {
		ts = ts<<8 | uint64(c)
	}
	return Receipt{ID: string(f[3 : 3+idLen]), Timestamp: int64(ts)}, nil
}
