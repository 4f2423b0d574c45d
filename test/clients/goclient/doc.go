// Command goclient holds the Go clients of the wsegress client matrix
// (test/clients/run) and the frame helper for its curl client:
//
//	goclient gorilla  gorilla/websocket, proxy from HTTP_PROXY/HTTPS_PROXY
//	goclient coder    coder/websocket, http.Client whose Transport has a Proxy
//	goclient frames   builds and checks the raw frames curl sends and gets
//
// Each client prints one line per step, "ok STEP detail" or "fail STEP
// reason"; the runner turns them into PASS and FAIL lines.
package main
