// Package acl parses proxy targets into one canonical form and decides, as a
// pure function of that form, the dialed address and the user, whether a
// tunnel may be opened. Rules are compiled and validated once; non-public
// destinations and the proxy's own listeners are denied unless a rule names
// them, so a name or address trick cannot reach what the policy did not intend.
package acl
