// Command echoserver is the target side of the wsegress client matrix
// (test/clients/run). It has four subcommands:
//
//	echoserver certs   writes a test CA and the wss:// server certificate
//	echoserver serve   ws:// and wss:// echo targets plus a "denied" listener
//	echoserver tap     a recording TCP relay between a client and the proxy
//	echoserver compare checks that a handshake reached the target intact
//
// Everything it observes is written as small files into one record
// directory, so that the bash runner can check the target's view of each
// case after the client has exited.
package main
