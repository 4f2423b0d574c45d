// Package auth verifies Basic proxy credentials against an Apache htpasswd
// file and maps users to groups. It does no network I/O and no logging: Check
// returns a Result and the proxy writes the 407/429 and the log line, so a
// secret can only leak through code that never sees it. It also caches
// successful verifications (bcrypt is slow) and throttles brute force.
package auth
