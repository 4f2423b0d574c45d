package acl

import "net/netip"

// specialRange is a block that is not a public destination, with the words
// a Decision uses for it.
type specialRange struct {
	prefix netip.Prefix
	why    string
}

func special(prefix, why string) specialRange {
	return specialRange{netip.MustParsePrefix(prefix), why}
}

// nonPublic4 lists IPv4 blocks from the IANA IPv4 Special-Purpose Address
// Registry (RFC 6890 and updates) that are not globally reachable, plus the
// documentation, benchmarking and 6to4-relay blocks, which nothing legitimate
// serves WebSockets from. More specific blocks come first.
var nonPublic4 = []specialRange{
	special("0.0.0.0/8", `"this network" (0.0.0.0/8)`),
	special("10.0.0.0/8", "RFC 1918 private"),
	special("100.64.0.0/10", "CGNAT shared address space (RFC 6598)"),
	special("127.0.0.0/8", "loopback"),
	special("169.254.0.0/16", "link-local (cloud metadata)"),
	special("172.16.0.0/12", "RFC 1918 private"),
	special("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
	special("192.0.2.0/24", "documentation (TEST-NET-1)"),
	special("192.88.99.0/24", "6to4 relay anycast (deprecated, RFC 7526)"),
	special("192.168.0.0/16", "RFC 1918 private"),
	special("198.18.0.0/15", "benchmarking (RFC 2544)"),
	special("198.51.100.0/24", "documentation (TEST-NET-2)"),
	special("203.0.113.0/24", "documentation (TEST-NET-3)"),
	special("224.0.0.0/4", "multicast"),
	special("255.255.255.255/32", "broadcast"),
	special("240.0.0.0/4", "reserved (240.0.0.0/4)"),
}

// nonPublic6 lists IPv6 blocks of the IANA IPv6 Special-Purpose Address
// Registry that lie inside global unicast 2000::/3, and the well-known blocks
// outside it (which are all non-public anyway, see IsPublic) so that the
// reason names them. Blocks that embed an IPv4 address (NAT64, 6to4, Teredo,
// IPv4-compatible, SIIT) are denied because the embedded address could be
// anything, including loopback or the metadata service, on the far side of
// a translator. More specific blocks come first.
var nonPublic6 = []specialRange{
	special("::/128", "unspecified"),
	special("::1/128", "loopback"),
	special("::/96", "IPv4-compatible IPv6 (deprecated)"),
	special("::ffff:0:0:0/96", "IPv4-translated IPv6 (SIIT)"),
	special("64:ff9b::/96", "IPv4-embedded IPv6 (NAT64)"),
	special("64:ff9b:1::/48", "IPv4-embedded IPv6 (local-use NAT64)"),
	special("100::/64", "discard-only (RFC 6666)"),
	special("100:0:0:1::/64", "dummy prefix (RFC 9780)"),
	special("2001::/32", "IPv4-embedded IPv6 (Teredo)"),
	special("2001:2::/48", "benchmarking (RFC 5180)"),
	special("2001::/23", "IETF protocol assignments (2001::/23)"),
	special("2001:db8::/32", "documentation (2001:db8::/32)"),
	special("2002::/16", "IPv4-embedded IPv6 (6to4)"),
	special("3fff::/20", "documentation (3fff::/20)"),
	special("5f00::/16", "SRv6 segment identifiers (RFC 9602)"),
	special("fc00::/7", "unique local (ULA)"),
	special("fe80::/10", "link-local"),
	special("fec0::/10", "site-local (deprecated)"),
	special("ff00::/8", "multicast"),
}

// globalUnicast6 is the only IPv6 block IANA allocates for global unicast;
// everything outside it is reserved (RFC 4291 2.4).
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// IsPublic reports whether ip is a public destination, and if not, why, in a
// few words for a Decision ("loopback", "RFC 1918 private", "link-local (cloud
// metadata)", "IPv4-embedded IPv6 (NAT64)", ...). An IPv4-mapped IPv6 address
// is judged as the IPv4 address it maps; a zone is ignored. The invalid Addr
// is not public.
func IsPublic(ip netip.Addr) (public bool, why string) {
	if !ip.IsValid() {
		return false, "not a valid address"
	}
	ip = ip.Unmap().WithZone("")
	table := nonPublic4
	if ip.Is6() {
		table = nonPublic6
	}
	for _, r := range table {
		if r.prefix.Contains(ip) {
			return false, r.why
		}
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return false, "reserved (outside global unicast 2000::/3)"
	}
	return true, ""
}
