package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dirNames lists dir, to catch leftover temporary files.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestSetPasswordCreates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")
	if err := SetPassword(path, "alice", []byte("first:pw ¶"), 4); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode = %v; want 0600", fi.Mode().Perm())
	}
	if got := readFile(t, path); !strings.HasPrefix(got, "alice:$2y$04$") || !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("file = %q; want one alice:$2y$04$... line", got)
	}
	if !htpasswdVerify(t, path, "alice", "first:pw ¶") {
		t.Error("htpasswd -v rejects the password SetPassword wrote")
	}
	if htpasswdVerify(t, path, "alice", "first:pw") {
		t.Error("htpasswd -v accepts a wrong password")
	}
	a, err := New(path, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := a.Check(testClient, basic("alice", "first:pw ¶")); r.Status != StatusOK {
		t.Errorf("Check = %+v; want OK", r)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v; want only htpasswd", names)
	}
}

// TestBcryptCost covers cost resolution without paying for a cost-10 hash
// under the race detector (the benchmarks write one through SetPassword).
func TestBcryptCost(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, 10}, {-1, 10}, {4, 4}, {12, 12}, {17, 17}, {3, 0}, {18, 0}, {31, 0}} {
		got, err := bcryptCost(tt.in)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("bcryptCost(%d) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestSetPasswordKeepsOtherLines edits a file made by the real htpasswd
// tool, with comments, blank lines and no final newline.
func TestSetPasswordKeepsOtherLines(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		"# wsegress users: keep me",
		htpasswdEntry(t, "bob", "bobpw", "-m"),
		"",
		"   " + htpasswdEntry(t, "alice", "oldpw", "-B", "-C", "4") + " ",
		"  # indented comment",
		htpasswdEntry(t, "carol", "carolpw", "-2"),
	}
	orig := strings.Join(lines, "\n") // no final newline
	path := writeFile(t, dir, "htpasswd", orig)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}

	if err := SetPassword(path, "alice", []byte("newpw"), 4); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(readFile(t, path), "\n")
	if len(got) != len(lines) || !strings.HasPrefix(got[3], "alice:$2y$04$") {
		t.Fatalf("file after update = %q; want alice replaced in place", got)
	}
	for i, want := range lines {
		if i != 3 && got[i] != want {
			t.Errorf("line %d = %q; want %q unchanged", i+1, got[i], want)
		}
	}
	if !htpasswdVerify(t, path, "alice", "newpw") || htpasswdVerify(t, path, "alice", "oldpw") {
		t.Error("htpasswd -v: alice's password not changed")
	}
	if !htpasswdVerify(t, path, "bob", "bobpw") || !htpasswdVerify(t, path, "carol", "carolpw") {
		t.Error("htpasswd -v: other users' passwords broken")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after update = %v, %v; want 0640 kept", fi.Mode().Perm(), err)
	}

	before := readFile(t, path)
	if err := SetPassword(path, "dave", []byte("davepw"), 4); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, path)
	if !strings.HasPrefix(after, before+"\ndave:$2y$04$") || !strings.HasSuffix(after, "\n") {
		t.Errorf("adding dave: file = %q; want the old content, a newline, then dave's line", after)
	}
	if !htpasswdVerify(t, path, "dave", "davepw") {
		t.Error("htpasswd -v rejects dave")
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v; want only htpasswd", names)
	}
}

func TestReplaceUser(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty file", "", "alice:H\n"},
		{"append", "bob:x\n", "bob:x\nalice:H\n"},
		{"append after missing newline", "bob:x", "bob:x\nalice:H\n"},
		{"replace keeps CRLF", "bob:x\r\nalice:old\r\n", "bob:x\r\nalice:H\r\n"},
		{"append uses CRLF", "bob:x\r\n", "bob:x\r\nalice:H\r\n"},
		{"duplicates removed", "alice:1\nbob:x\nalice:2\n", "alice:H\nbob:x\n"},
		{"comment is not a user", "#alice:1\n", "#alice:1\nalice:H\n"},
		{"prefix is not a user", "alice2:1\nalic:2\n", "alice2:1\nalic:2\nalice:H\n"},
		{"last line without newline", "bob:x\nalice:old", "bob:x\nalice:H\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(replaceUser([]byte(tt.in), "alice", "alice:H")); got != tt.want {
				t.Errorf("replaceUser(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSetPasswordFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	target := writeFile(t, dir, "real", "bob:"+okBcrypt+"\n")
	link := filepath.Join(dir, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Skipf("symlink: %v", err)
	}
	if err := SetPassword(link, "alice", []byte("pw"), 4); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link replaced by a regular file (%v)", err)
	}
	if got := readFile(t, target); !strings.Contains(got, "\nalice:$2y$04$") {
		t.Errorf("target = %q; want alice added", got)
	}
}

func TestSetPasswordRejects(t *testing.T) {
	dir := t.TempDir()
	orig := "bob:" + okBcrypt + "\n"
	path := writeFile(t, dir, "htpasswd", orig)
	tests := []struct {
		name, user, pass string
		cost             int
		want             string
	}{
		{"colon in user", "a:b", "pw", 4, "':'"},
		{"empty user", "", "pw", 4, "non-empty"},
		{"newline in user", "a\nb", "pw", 4, "control"},
		{"comment user", "#a", "pw", 4, "'#'"},
		{"empty password", "alice", "", 4, "empty password"},
		{"cost too low", "alice", "pw", 3, "cost 3"},
		{"cost too high", "alice", "pw", 18, "cost 18"},
		{"password too long", "alice", strings.Repeat("p", 73), 4, "72 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := SetPassword(path, tt.user, []byte(tt.pass), tt.cost)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SetPassword() error = %v; want %q", err, tt.want)
			}
			if got := readFile(t, path); got != orig {
				t.Errorf("file changed to %q", got)
			}
		})
	}
	if err := SetPassword(filepath.Join(dir, "missing-dir", "htpasswd"), "alice", []byte("pw"), 4); err == nil {
		t.Error("SetPassword into a missing directory succeeded")
	}
}
