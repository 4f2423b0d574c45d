package tlsconf

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestUserFromCert(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	full := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "alice", Organization: []string{"Example"}},
		EmailAddresses: []string{"alice@example.com", "a@example.org"},
		URIs:           []*url.URL{u("spiffe://example.org/ns/chat/sa/bot"), u("urn:x:second")},
	}
	empty := &x509.Certificate{Subject: pkix.Name{Organization: []string{"Example"}}}
	for name, tc := range map[string]struct {
		cert    *x509.Certificate
		mode    UserMode
		want    string
		wantErr string
	}{
		"cn":                      {full, UserCN, "alice", ""},
		"first of several emails": {full, UserSANEmail, "alice@example.com", ""},
		"first of several URIs":   {full, UserSANURI, "spiffe://example.org/ns/chat/sa/bot", ""},
		"no cn":                   {empty, UserCN, "", "has no CN"},
		"no email":                {empty, UserSANEmail, "", "no e-mail SAN"},
		"no uri":                  {empty, UserSANURI, "", "no URI SAN"},
		"control character in cn": {&x509.Certificate{Subject: pkix.Name{CommonName: "al\nice"}}, UserCN, "", "control character"},
		"too long":                {&x509.Certificate{Subject: pkix.Name{CommonName: strings.Repeat("a", 300)}}, UserCN, "", "longer than"},
		"not utf-8":               {&x509.Certificate{Subject: pkix.Name{CommonName: "\xff"}}, UserCN, "", "not UTF-8"},
		"unknown mode":            {full, UserMode(9), "", "unknown mode"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := UserFromCert(tc.cert, tc.mode)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("UserFromCert(%v) = %q, %v; want %q, nil", tc.mode, got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrNoUser) {
				t.Fatalf("UserFromCert(%v) = %q, %v; want ErrNoUser containing %q", tc.mode, got, err, tc.wantErr)
			}
			if strings.ContainsAny(err.Error(), "\n") {
				t.Errorf("error has a raw control character: %q", err)
			}
		})
	}
	if _, err := UserFromCert(nil, UserCN); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("UserFromCert(nil) error = %v; want ErrNoCertificate", err)
	}
}

func TestParseUserMode(t *testing.T) {
	for _, m := range []UserMode{UserCN, UserSANEmail, UserSANURI} {
		got, err := ParseUserMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseUserMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	for _, bad := range []string{"", "CN", "san", "email", "dn"} {
		if _, err := ParseUserMode(bad); err == nil || !strings.Contains(err.Error(), "--tls-client-user") {
			t.Errorf("ParseUserMode(%q) error = %v; want one naming --tls-client-user", bad, err)
		}
	}
	var zero UserMode
	if zero != UserCN {
		t.Errorf("zero UserMode = %v; want cn (the default)", zero)
	}
}
