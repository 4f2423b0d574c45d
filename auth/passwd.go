package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// DefaultCost is the bcrypt cost SetPassword uses when given cost <= 0:
// about 50 ms per verification on a current core, which the cache hides.
// (htpasswd -B defaults to 5, a 2012 figure.)
const DefaultCost = 10

// maxCost is the highest bcrypt cost written or loaded, as in htpasswd -C.
const maxCost = 17

// SetPassword adds user to the htpasswd file at path, or replaces their
// password, with a bcrypt hash written with the "$2y$" prefix as htpasswd -B
// does (the prefix letters name the same algorithm; see reBcrypt). cost <= 0
// means DefaultCost; otherwise it must be 4..17, htpasswd's range and the
// loader's (cost 17 already takes seconds per check).
//
// Every other line, comments and other users included, is kept byte for
// byte. If user appears on several lines (which New refuses), the first is
// replaced and the others are removed. The file is created with mode 0600
// if absent; an existing file keeps its mode and, where the OS allows, its
// owner and group. A symlink is followed and its target replaced. The write
// is atomic (temporary file in the same directory, fsync, rename, fsync of
// the directory), so a crash or a concurrent Reload sees the old or the new
// file, never half of one. Concurrent SetPassword calls on one file are not
// serialised: the last rename wins, as with htpasswd(1).
//
// It rejects user names CheckUserName refuses, empty passwords and
// passwords over 72 bytes (bcrypt ignores the rest; failing is better than
// silently accepting a prefix).
func SetPassword(path, user string, password []byte, cost int) error {
	if err := CheckUserName(user); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if len(password) == 0 {
		return errors.New("set password: empty password")
	}
	cost, err := bcryptCost(cost)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	hash, err := bcrypt.GenerateFromPassword(password, cost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return errors.New("set password: password longer than 72 bytes, bcrypt's limit")
	}
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if !bytes.HasPrefix(hash, []byte("$2a$")) {
		return errors.New("set password: unexpected bcrypt hash prefix")
	}
	hash[2] = 'y'

	target, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		target, err = path, nil
	}
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	old, err := os.ReadFile(target)
	var fi fs.FileInfo
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("set password: %w", err)
	default:
		if fi, err = os.Stat(target); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
	}
	data := replaceUser(old, user, user+":"+string(hash))
	if err := writeAtomic(target, data, fi); err != nil {
		return fmt.Errorf("set password %s: %w", target, err)
	}
	return nil
}

// bcryptCost resolves SetPassword's cost argument. It checks the range
// itself because bcrypt.GenerateFromPassword silently turns a too-low cost
// into its default.
func bcryptCost(cost int) (int, error) {
	switch {
	case cost <= 0:
		return DefaultCost, nil
	case cost < bcrypt.MinCost || cost > maxCost:
		return 0, fmt.Errorf("bcrypt cost %d outside %d..%d", cost, bcrypt.MinCost, maxCost)
	}
	return cost, nil
}

// replaceUser returns data with user's entry replaced by entry, matching
// lines the way parseHtpasswd reads them. Other lines are copied verbatim.
func replaceUser(data []byte, user, entry string) []byte {
	var out bytes.Buffer
	out.Grow(len(data) + len(entry) + 2)
	replaced := false
	eol := "\n"
	rest := data
	for first := true; len(rest) > 0; first = false {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if first && bytes.HasSuffix(line, []byte("\r\n")) {
			eol = "\r\n" // follow the file's line-ending convention
		}
		t := strings.TrimSpace(string(line))
		name, _, found := strings.Cut(t, ":")
		if t == "" || t[0] == '#' || !found || name != user {
			out.Write(line)
			continue
		}
		if !replaced {
			lineEOL := "\n"
			if bytes.HasSuffix(line, []byte("\r\n")) {
				lineEOL = "\r\n"
			}
			out.WriteString(entry + lineEOL)
			replaced = true
		}
	}
	if !replaced {
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteString(eol)
		}
		out.WriteString(entry + eol)
	}
	return out.Bytes()
}

// writeAtomic replaces the file at path with data. fi describes the file
// being replaced (nil if none): its mode and owner are carried over.
func writeAtomic(path string, data []byte, fi fs.FileInfo) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if fi != nil {
		if err = f.Chmod(fi.Mode().Perm()); err != nil {
			return err
		}
		if err = copyOwner(f, fi); err != nil {
			return err
		}
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
