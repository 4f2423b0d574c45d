package acl

import "testing"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com:443", "example.com:443"},
		{"user:pass@example.com:443", "REDACTED@example.com:443"},
		{"http://u:p@example.com/x", "http://REDACTED@example.com/x"},
		{`bad target "a:b@c@host:443": userinfo`, `bad target "REDACTED@host:443": userinfo`},
		{"dial ws://bob:s3cret@h:80 failed", "dial ws://REDACTED@h:80 failed"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
