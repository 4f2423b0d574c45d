//go:build !unix

package tlsconf

import "io/fs"

// inode is 0 where the platform has no inode in its FileInfo; size and
// modification time still detect a change.
func inode(fs.FileInfo) uint64 { return 0 }
