//go:build unix

package tlsconf

import (
	"io/fs"
	"syscall"
)

// inode returns the file's inode number, so that an atomic rename of a new
// file over the old one (certbot, cert-manager, Kubernetes secret volumes)
// is seen even if size and modification time happen to match.
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino) // Ino is uint32 on some platforms
	}
	return 0
}
