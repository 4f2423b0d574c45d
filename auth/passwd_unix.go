//go:build unix

package auth

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// copyOwner gives f the owner and group of the file fi describes, so that
// an administrator running "wsegress passwd" as root does not leave a file
// the proxy's own user can no longer read. Without the privilege to do so
// (EPERM) the file keeps the writer's ownership, as a new file would.
func copyOwner(f *os.File, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return nil
	}
	if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return nil
}
