// Command soak runs wsegress, with its default settings, under the hostile
// loads of issue 11 (a stale password, a bcrypt burst, stalled readers, slow
// and idle connections, idle metrics clients, password guessing) while good
// clients keep opening tunnels and echoing, and reports what each attack
// cost the good clients and the proxy. Loopback only; see README.md.
package main
