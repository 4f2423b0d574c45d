// Package deploy holds the packaging of wsegress (systemd units, a
// container file, Kubernetes manifests) and the test that checks them
// against the real command line. It has no code of its own.
package deploy
