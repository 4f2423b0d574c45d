// Package pac generates a proxy auto-config (PAC) file that points
// browsers at wsegress, and serves it over HTTP with an ETag.
package pac

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wsegress/wsegress/acl"
)

// ContentType is the MIME type browsers expect for a PAC file.
const ContentType = "application/x-ns-proxy-autoconfig"

// Config is what the PAC file is generated from.
type Config struct {
	// Proxy is the host:port clients use to reach the proxy (--pac-proxy):
	// the name in the proxy's certificate when TLS is on, not
	// necessarily the listen address.
	Proxy string
	// TLS, if true, makes the PAC say "HTTPS host:port" (TLS between the
	// browser and the proxy); otherwise "PROXY host:port".
	TLS bool
	// Direct lists what the browser reaches without the proxy
	// (--pac-direct): exact hosts ("intranet.example.com"), strict
	// subdomains ("*.example.com"), a domain and its subdomains
	// (".example.com", as in ACL rules), IP addresses and CIDRs, IPv4 or
	// IPv6 ("10.0.0.0/8", "fd00::/8"). An address or CIDR matches only a
	// URL whose host is an IP literal: the PAC never resolves names (see
	// the package README section "PAC file").
	Direct []string
}

// File is a generated PAC file. It is immutable; it serves itself as an
// http.Handler.
type File struct {
	script []byte
	etag   string
}

// New validates cfg and generates the PAC file. It reports every bad
// entry at once, each naming its flag.
func New(cfg Config) (*File, error) {
	var errs []error
	proxy, err := proxyString(cfg.Proxy, cfg.TLS)
	if err != nil {
		errs = append(errs, err)
	}
	var d direct
	for _, e := range cfg.Direct {
		if err := d.add(e); err != nil {
			errs = append(errs, fmt.Errorf("--pac-direct %q: %w", e, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	script := render(proxy, d)
	sum := sha256.Sum256(script)
	return &File{script: script, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}, nil
}

// Script returns the JavaScript text of the PAC file. The caller must not
// modify it.
func (f *File) Script() []byte { return f.script }

// ETag returns the strong entity tag of the script, quoted: a hash of its
// content, so the same configuration gives the same tag on every replica.
func (f *File) ETag() string { return f.etag }

// ServeHTTP answers GET and HEAD with the script, its ETag and the PAC
// MIME type; a matching If-None-Match gets 304. Other methods get 405.
func (f *File) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("ETag", f.etag)
	// Revalidate every time: the ETag makes that a 304, and a changed
	// --pac-direct reaches browsers on their next fetch.
	h.Set("Cache-Control", "no-cache")
	// ServeContent handles If-None-Match (304), HEAD and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.script))
}

// proxyString validates --pac-proxy and returns the PAC directive for it.
func proxyString(hostport string, tls bool) (string, error) {
	if hostport == "" {
		return "", errors.New(`--pac-proxy is empty; give the host:port clients use to reach the proxy, e.g. "proxy.example.com:3128"`)
	}
	if strings.Contains(hostport, "://") {
		return "", fmt.Errorf("--pac-proxy %q: give host:port without a scheme (TLS comes from the listener)", hostport)
	}
	t, err := acl.ParseTarget(hostport)
	if err != nil {
		return "", fmt.Errorf("--pac-proxy: %w", err)
	}
	if tls {
		return "HTTPS " + t.String(), nil
	}
	return "PROXY " + t.String(), nil
}

// direct is the validated --pac-direct list, each kind in its own list
// in the order given, without duplicates.
type direct struct {
	hosts   []string       // exact names
	subs    []string       // "*.d": ".d", strict subdomains
	domains []string       // ".d": "d", the domain and its subdomains
	nets4   []netip.Prefix // masked IPv4 prefixes
	nets6   []netip.Prefix // masked IPv6 prefixes
}

// add validates one --pac-direct entry and files it.
func (d *direct) add(e string) error {
	switch {
	case e == "":
		return errors.New(`empty entry; write a host, "*.domain", ".domain" or a CIDR`)
	case strings.Contains(e, "/"):
		return d.addNet(e)
	case strings.Contains(e, ":"):
		if _, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil || strings.Count(e, ":") > 1 {
			return d.addNet(e)
		}
		return errors.New("a port is not allowed: the PAC decides by host only")
	}
	if strings.Contains(e, "*") && !strings.HasPrefix(e, "*.") || strings.Count(e, "*") > 1 {
		return errors.New(`"*" is allowed only as the whole first label, as in "*.example.com"`)
	}
	name, kind := e, "host"
	switch {
	case strings.HasPrefix(e, "*."):
		name, kind = e[2:], "sub"
	case strings.HasPrefix(e, "."):
		name, kind = e[1:], "domain"
	}
	t, err := acl.ParseTarget(net.JoinHostPort(name, "1"))
	if err != nil {
		_, msg, _ := strings.Cut(err.Error(), ": ")
		return fmt.Errorf("bad host: %s", msg)
	}
	if a, ok := t.Addr(); ok {
		if kind != "host" {
			return fmt.Errorf("a wildcard cannot go with an address; write a CIDR such as %q", netip.PrefixFrom(a, a.BitLen()))
		}
		return d.addNet(a.String())
	}
	switch kind {
	case "host":
		d.put(&d.hosts, t.Host)
	case "sub":
		d.put(&d.subs, "."+t.Host)
	case "domain":
		d.put(&d.domains, t.Host)
	}
	return nil
}

// addNet files an IP address or CIDR.
func (d *direct) addNet(e string) error {
	s := strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")
	if strings.Contains(s, "%") {
		return errors.New("IPv6 zones are not allowed")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return errors.New(`bad CIDR; write an address and a prefix length, e.g. "10.0.0.0/8" or "fd00::/8"`)
		}
		if m := p.Masked(); m != p {
			return fmt.Errorf("address bits are set past the prefix length; write %q", m)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return errors.New(`neither a host name nor an IP address or CIDR; write e.g. "intranet.example.com", "*.example.com", "10.0.0.0/8" or "fd00::/8"`)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// A browser that gets http://[::ffff:10.1.2.3]/ connects to
	// 10.1.2.3: an IPv4-mapped prefix is the IPv4 prefix it maps.
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if p.Addr().Is4() {
		d.putNet(&d.nets4, p)
	} else {
		d.putNet(&d.nets6, p)
	}
	return nil
}

func (d *direct) put(list *[]string, s string) {
	if !slices.Contains(*list, s) {
		*list = append(*list, s)
	}
}

func (d *direct) putNet(list *[]netip.Prefix, p netip.Prefix) {
	if !slices.Contains(*list, p) {
		*list = append(*list, p)
	}
}
