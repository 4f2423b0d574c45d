// Package test holds wsegress's end-to-end tests: a real proxy, real
// targets and real clients on 127.0.0.1, driven only through exported
// APIs. The client compatibility matrix lives in test/clients and the
// benchmark in test/bench.
package test
