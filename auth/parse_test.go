package auth

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

func b64(s string) string    { return base64.StdEncoding.EncodeToString([]byte(s)) }
func rawb64(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) }

var parseBasicTests = []struct {
	name       string
	header     string
	user, pass string
	ok         bool
}{
	{"plain", "Basic " + b64("alice:s3cret"), "alice", "s3cret", true},
	{"lowercase scheme", "basic " + b64("alice:pw"), "alice", "pw", true},
	{"uppercase scheme", "BASIC " + b64("alice:pw"), "alice", "pw", true},
	{"mixed case scheme", "bAsIc " + b64("alice:pw"), "alice", "pw", true},
	{"several spaces", "Basic   " + b64("alice:pw"), "alice", "pw", true},
	{"tab", "Basic\t" + b64("alice:pw"), "alice", "pw", true},
	{"surrounding blanks", " \tBasic " + b64("alice:pw") + " \t", "alice", "pw", true},
	{"colon in password", "Basic " + b64("alice:a:b:c"), "alice", "a:b:c", true},
	{"empty password parses", "Basic " + b64("alice:"), "alice", "", true},
	{"unpadded base64", "Basic " + rawb64("alice:pw"), "alice", "pw", true},
	{"utf-8 user", "Basic " + b64("jörg:pässword"), "jörg", "pässword", true},
	{"space in user", "Basic " + b64("john smith:pw"), "john smith", "pw", true},
	{"control char in password allowed", "Basic " + b64("alice:p\tw"), "alice", "p\tw", true},
	{"at max length", "Basic " + b64("u:"+strings.Repeat("p", 3063)), "u", strings.Repeat("p", 3063), true},

	{"empty", "", "", "", false},
	{"blank", "  ", "", "", false},
	{"scheme only", "Basic", "", "", false},
	{"scheme and space only", "Basic ", "", "", false},
	{"no separator", "Basic" + b64("alice:pw"), "", "", false},
	{"bearer", "Bearer " + b64("alice:pw"), "", "", false},
	{"digest", `Digest username="alice"`, "", "", false},
	{"scheme prefix", "Basicx " + b64("alice:pw"), "", "", false},
	{"unicode fold long s", "Baſic " + b64("alice:pw"), "", "", false},
	{"bad base64", "Basic !!!!", "", "", false},
	{"bad padding", "Basic " + b64("alice:pwx") + "=", "", "", false},
	{"too much padding", "Basic YQ===", "", "", false},
	{"padding inside", "Basic YQ==YQ==", "", "", false},
	{"CRLF inside base64", "Basic " + b64("alice:pw")[:4] + "\r\n" + b64("alice:pw")[4:], "", "", false},
	{"space inside base64", "Basic " + b64("alice:pw")[:4] + " " + b64("alice:pw")[4:], "", "", false},
	{"no colon", "Basic " + b64("alicepw"), "", "", false},
	{"empty user", "Basic " + b64(":pw"), "", "", false},
	{"empty both", "Basic " + b64(":"), "", "", false},
	{"NUL in user", "Basic " + b64("ali\x00ce:pw"), "", "", false},
	{"newline in user", "Basic " + b64("ali\nce:pw"), "", "", false},
	{"DEL in user", "Basic " + b64("ali\x7fce:pw"), "", "", false},
	{"tab in user", "Basic " + b64("ali\tce:pw"), "", "", false},
	{"oversized", "Basic " + b64("u:"+strings.Repeat("p", 3066)), "", "", false},
	{"oversized by blanks", "Basic " + b64("alice:pw") + strings.Repeat(" ", MaxHeaderLen), "", "", false},
}

func TestParseBasic(t *testing.T) {
	for _, tt := range parseBasicTests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass, ok := ParseBasic(tt.header)
			if user != tt.user || pass != tt.pass || ok != tt.ok {
				t.Errorf("ParseBasic(%q) = %q, %q, %v; want %q, %q, %v",
					tt.header, user, pass, ok, tt.user, tt.pass, tt.ok)
			}
		})
	}
}

// FuzzParseBasic checks ParseBasic's invariants and compares it with the
// standard library's Basic parser, which it must agree with on every input
// the stdlib accepts and that is within our stricter rules.
func FuzzParseBasic(f *testing.F) {
	for _, tt := range parseBasicTests {
		f.Add(tt.header)
	}
	f.Fuzz(func(t *testing.T, header string) {
		user, pass, ok := ParseBasic(header)
		if !ok {
			if user != "" || pass != "" {
				t.Fatalf("ParseBasic(%q) = %q, %q, false; want empty results", header, user, pass)
			}
		} else {
			if len(header) > MaxHeaderLen {
				t.Fatalf("ParseBasic accepted %d bytes; max %d", len(header), MaxHeaderLen)
			}
			if !validUser(user) || strings.Contains(user, ":") {
				t.Fatalf("ParseBasic(%q) returned invalid user %q", header, user)
			}
			// Canonical re-encoding parses to the same credentials.
			u2, p2, ok2 := ParseBasic(basic(user, pass))
			if !ok2 || u2 != user || p2 != pass {
				t.Fatalf("round trip of %q, %q = %q, %q, %v", user, pass, u2, p2, ok2)
			}
		}
		r := &http.Request{Header: http.Header{"Authorization": {header}}}
		su, sp, sok := r.BasicAuth()
		// The stdlib decoder skips CR and LF inside base64; we refuse them
		// (net/http never passes them in a header value anyway).
		if sok && len(header) <= MaxHeaderLen && validUser(su) && !strings.ContainsAny(header, "\r\n") {
			if !ok || su != user || sp != pass {
				t.Fatalf("ParseBasic(%q) = %q, %q, %v; stdlib says %q, %q", header, user, pass, ok, su, sp)
			}
		}
	})
}

func TestCheckUserName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"john smith", true},
		{"jörg", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{"a:b", false},
		{"#alice", false},
		{" alice", false},
		{"alice ", false},
		{"ali\nce", false},
		{"ali\x00ce", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		if err := CheckUserName(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckUserName(%q) = %v; want ok=%v", tt.name, err, tt.ok)
		}
	}
}
