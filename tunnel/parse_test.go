package tunnel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/eclipse-iofog/iofog-connector/wire"
)

const testPasscode = "0123456789abcdef0123456789abcdef0123"

func TestParseConfigNamesFileLineAndField(t *testing.T) {
	for _, tc := range []struct{ js, want string }{
		{"{\n\"mode\":\"mirror\",\"host\":\"h\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"devmode\":true}", "agent.json:2: field mode"},
		{"{\"mode\":\"public\",\n\"host\":\"\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"localport\":80,\"devmode\":true}", "agent.json:2: field host"},
		{"{\"mode\":\"public\",\"host\":\"h\",\n\n\"port\":70000,\"passcode\":\"" + testPasscode + "\",\"devmode\":true}", "agent.json:3: field port"},
		{"{\"mode\":\"public\",\"host\":\"h\",\"port\":1,\n\"passcode\":\"short\",\"devmode\":true}", "agent.json:2: field passcode"},
		{"{\"mode\":\"public\",\"host\":\"h\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"localport\":80,\n\"devmode\":false}", "field cert: required"},
		{"{\"mode\":\"public\",\"host\":\"h\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"devmode\":false,\"localport\":80,\n\"cert\":\"bm90IGEgY2VydA==\"}", "agent.json:2: field cert: not an X.509"},
		{"{\"mode\":\"public\",\"host\":\"h\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"devmode\":true}", "field localport: a public mapping needs"},
		{"{\"mode\":\"public\",\n\"port\":\"6000\"}", "agent.json:2: field port: string is not a JSON int"},
		{"{\"mode\":\"public\",\n\"connectioncount\":100000,\"host\":\"h\",\"port\":1,\"passcode\":\"" + testPasscode + "\",\"localport\":80,\"devmode\":true}", "agent.json:2: field connectioncount"},
		{"{\"mode\":\n", "agent.json"},
		{"{} {}", "text after the JSON object"},
	} {
		_, err := ParseConfig("agent.json", []byte(tc.js))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.js, err, tc.want)
		}
	}
	big := append([]byte(`{"mode":"public","cert":"`), bytes.Repeat([]byte("A"), maxConfigSize)...)
	if _, err := ParseConfig("agent.json", big); err == nil || !strings.Contains(err.Error(), "more than the 1048576 allowed") {
		t.Errorf("oversize config: %v", err)
	}
	// The Controller's own configs, as captured.
	for _, js := range []string{
		`{"mode":"public","host":"127.0.0.1","port":6000,"passcode":"` + testPasscode + `","connectioncount":60,"localhost":"iofog","localport":8888,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`,
		`{"mode":"private","host":"127.0.0.1","port":6002,"passcode":"` + testPasscode + `","connectioncount":1,"localhost":"iofog","localport":0,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`,
	} {
		if _, err := ParseConfig("agent.json", []byte(js)); err != nil {
			t.Errorf("captured config: %v", err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"mode":"public","host":"127.0.0.1","port":6000,"passcode":"` + testPasscode + `","connectioncount":60,"localhost":"iofog","localport":8888,"heartbeatfrequency":20000,"heartbeatabsencethreshold":60000,"devmode":true}`))
	f.Add([]byte(`{"mode":"private","host":"h","port":1,"passcode":"` + testPasscode + `","devmode":false,"cert":"MIIB"}`))
	f.Add([]byte("{\n\"port\":\"x\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if c.Validate() != nil || c.Count() < 1 || c.Count() > MaxConnectionCount {
			t.Fatalf("accepted a config that does not validate: %+v", c)
		}
	})
}

func TestIoMessageRoundTrip(t *testing.T) {
	m := &IoMessage{ID: "id", Tag: "tag", GroupID: "g", SequenceNumber: 70000, SequenceTotal: 1, Priority: 0,
		Timestamp: 1732540000000, Publisher: "pub", AuthID: "a", AuthGroup: "ag", ChainPosition: -1, Hash: "h",
		PreviousHash: "ph", Nonce: "n", DifficultyTarget: 255, InfoType: "it", InfoFormat: "if",
		ContextData: []byte{1, 2}, ContentData: []byte("hello")}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Facts of the encoding: version 4 first, a 33-byte header, numbers
	// big-endian in as few bytes as they need.
	if binary.BigEndian.Uint16(b) != 4 || b[6] != 3 || b[9] != 6 {
		t.Fatalf("header %x", b[:33])
	}
	got, err := DecodeIoMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
	if _, err := DecodeIoMessage(append(b, 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	if _, err := DecodeIoMessage(b[:len(b)-1]); err == nil {
		t.Error("short message accepted")
	}
}

func FuzzDecodeIoMessage(f *testing.F) {
	m := &IoMessage{ID: "x", ContentData: []byte("payload"), Timestamp: 5}
	b, _ := m.Encode()
	f.Add(b)
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeIoMessage(data)
		if err != nil {
			return
		}
		// What decodes re-encodes to a message that decodes the same.
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := DecodeIoMessage(b)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded message differs: %v", err)
		}
		// And the route framing carries it unchanged.
		framed := append(append([]byte("ACK"), data...), wire.TxEnd...)
		got, wrapped, err := readRouteMessage(bufio.NewReader(bytes.NewReader(framed)), len(data))
		if err != nil || wrapped || !bytes.Equal(got, data) {
			t.Fatalf("route framing: %v", err)
		}
		// And wrapped as on the websocket, as other containers send it.
		got, wrapped, err = readRouteMessage(bufio.NewReader(bytes.NewReader(append(messageFrame(data), wire.TxEnd...))), len(data))
		if err != nil || !wrapped || !bytes.Equal(got, data) {
			t.Fatalf("wrapped route framing: %v", err)
		}
	})
}

func FuzzReadRouteMessage(f *testing.F) {
	m := &IoMessage{ID: "x", ContentData: []byte("TXEND")}
	b, _ := m.Encode()
	f.Add(append(b, "TXEND"...))
	f.Add(append(messageFrame(b), "TXEND"...))
	f.Add([]byte("ACKACK"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for range 100 {
			msg, _, err := readRouteMessage(br, 1<<16)
			if err != nil {
				return
			}
			if _, err := DecodeIoMessage(msg); err != nil {
				t.Fatalf("route gave a message that does not decode: %v", err)
			}
		}
	})
}

func TestRouteRefusesOversizeMessageBeforeReadingIt(t *testing.T) {
	m := &IoMessage{ContentData: bytes.Repeat([]byte("x"), 1000)}
	b, _ := m.Encode()
	// Only the header is there: the length alone must be refused.
	_, _, err := readRouteMessage(bufio.NewReader(bytes.NewReader(b[:ioHeaderLen])), 999)
	if err == nil || !strings.Contains(err.Error(), "more than the 999 allowed") {
		t.Fatalf("oversize message: %v", err)
	}
	if _, _, err := readRouteMessage(bufio.NewReader(bytes.NewReader(messageFrame(b)[:5])), 999); err == nil || !strings.Contains(err.Error(), "more than the 999 allowed") {
		t.Fatalf("oversize wrapped message: %v", err)
	}
	if _, err := parseMessageFrame(messageFrame(b), 999); err == nil {
		t.Fatal("oversize websocket frame accepted")
	}
	if _, _, err := readRouteMessage(bufio.NewReader(bytes.NewReader(append(b, "TXENX"...))), 1<<20); err == nil {
		t.Fatal("message without TXEND accepted")
	}
	if _, _, err := readRouteMessage(bufio.NewReader(bytes.NewReader(nil)), 1<<20); err != io.EOF {
		t.Fatalf("empty route: %v, want EOF", err)
	}
}

func TestReceiptFrame(t *testing.T) {
	r := Receipt{ID: "abc", Timestamp: 1732540000000}
	got, err := parseReceipt(ReceiptFrame(r))
	if err != nil || got != r {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := parseReceipt([]byte{0xE, 200, 8}); err == nil {
		t.Fatal("short receipt accepted")
	}
}

// Frames from the agent's websocket: a message frame is accepted only when
// its length is exact and its message decodes; a receipt never panics.
func FuzzAgentFrames(f *testing.F) {
	m := &IoMessage{ID: "x", ContentData: []byte("payload")}
	b, _ := m.Encode()
	f.Add(messageFrame(b))
	f.Add(ReceiptFrame(Receipt{ID: "id", Timestamp: 42}))
	f.Add([]byte{0xD, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if msg, err := parseMessageFrame(frame, 1<<16); err == nil {
			if len(msg) != len(frame)-5 {
				t.Fatalf("message of %d bytes from a frame of %d", len(msg), len(frame))
			}
			if _, err := DecodeIoMessage(msg); err != nil {
				t.Fatalf("accepted a message that does not decode: %v", err)
			}
		}
		if r, err := parseReceipt(frame); err == nil && len(r.ID) != int(frame[1]) {
			t.Fatalf("receipt id of %d bytes, frame says %d", len(r.ID), frame[1])
		}
	})
}
