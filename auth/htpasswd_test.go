package auth

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

var testClient = netip.MustParseAddr("192.0.2.1")

// realFormats are the hash options of the real htpasswd tool under test.
var realFormats = []struct {
	name string
	args []string
}{
	{"bcrypt", []string{"-B", "-C", "4"}},
	{"bcrypt default cost", []string{"-B"}},
	{"apr1", []string{"-m"}},
	{"sha256-crypt", []string{"-2"}},
	{"sha256-crypt rounds", []string{"-2", "-r", "6000"}},
	{"sha512-crypt", []string{"-5"}},
	{"sha512-crypt rounds", []string{"-5", "-r", "1000"}},
	{"sha1", []string{"-s"}},
	{"plaintext", []string{"-p"}},
}

// TestRealHtpasswdFormats loads one file holding a user per format, each
// made by the real htpasswd tool, and checks right and wrong passwords.
func TestRealHtpasswdFormats(t *testing.T) {
	const pass = "c0rrect:horse battery ¶"
	var lines []string
	for i, f := range realFormats {
		lines = append(lines, htpasswdEntry(t, "user"+string(rune('a'+i)), pass, f.args...))
	}
	a, _ := newTestAuth(t, newFakeClock(), Options{AllowPlaintext: true, Throttle: ThrottleConfig{Disabled: true}}, lines...)
	if got := a.Users(); got != len(realFormats) {
		t.Fatalf("Users() = %d; want %d", got, len(realFormats))
	}
	for i, f := range realFormats {
		user := "user" + string(rune('a'+i))
		t.Run(f.name, func(t *testing.T) {
			if r := a.Check(testClient, basic(user, pass)); r.Status != StatusOK || r.User != user {
				t.Errorf("Check(right password) = %+v; want OK for %s", r, user)
			}
			for _, wrong := range []string{"c0rrect:horse battery", pass + "x", strings.ToUpper(pass), ""} {
				if r := a.Check(testClient, basic(user, wrong)); r.Status != StatusInvalid || r.User != user {
					t.Errorf("Check(%q) = %+v; want Invalid for %s", wrong, r, user)
				}
			}
		})
	}
}

// TestBcryptVariants checks $2a$ and $2b$ by rewriting the prefix of a real
// htpasswd -B ($2y$) hash: the three name the same algorithm, the letter
// only records which crypt_blowfish bugs the writer had fixed, so for an
// ASCII password the hash bytes are identical.
func TestBcryptVariants(t *testing.T) {
	entry := htpasswdEntry(t, "bob", "pa55word", "-B", "-C", "4")
	if !strings.HasPrefix(entry, "bob:$2y$") {
		t.Fatalf("htpasswd -B made %q; want a $2y$ hash", entry)
	}
	for _, v := range []string{"$2y$", "$2a$", "$2b$"} {
		t.Run(v, func(t *testing.T) {
			line := strings.Replace(entry, "$2y$", v, 1)
			a, _ := newTestAuth(t, newFakeClock(), Options{}, line)
			if r := a.Check(testClient, basic("bob", "pa55word")); r.Status != StatusOK {
				t.Errorf("Check = %+v; want OK", r)
			}
			if r := a.Check(testClient, basic("bob", "pa55worD")); r.Status != StatusInvalid {
				t.Errorf("Check(wrong) = %+v; want Invalid", r)
			}
		})
	}
	_, err := parseHtpasswd("f", []byte(strings.Replace(entry, "$2y$", "$2x$", 1)), false)
	if err == nil || !strings.Contains(err.Error(), "$2x$") {
		t.Errorf("$2x$ entry: err = %v; want an error naming $2x$", err)
	}
}

// TestMD5Crypt checks glibc-style $1$ hashes, made by `openssl passwd -1`
// (htpasswd only writes $apr1$).
func TestMD5Crypt(t *testing.T) {
	bin := needTool(t, "openssl")
	out, err := exec.Command(bin, "passwd", "-1", "-salt", "Zx8.ab/c", "t0ps3cret").Output()
	if err != nil {
		t.Fatalf("openssl passwd -1: %v", err)
	}
	a, _ := newTestAuth(t, newFakeClock(), Options{}, "carol:"+strings.TrimSpace(string(out)))
	if r := a.Check(testClient, basic("carol", "t0ps3cret")); r.Status != StatusOK {
		t.Errorf("Check = %+v; want OK", r)
	}
	if r := a.Check(testClient, basic("carol", "t0ps3creT")); r.Status != StatusInvalid {
		t.Errorf("Check(wrong) = %+v; want Invalid", r)
	}
}

// TestPlaintextIsOptIn checks that a real htpasswd -p entry is a load error
// naming the user and line but not the password, unless allowed.
func TestPlaintextIsOptIn(t *testing.T) {
	hashed := htpasswdEntry(t, "alice", "x", "-B", "-C", "4")
	plain := htpasswdEntry(t, "dave", "Sup3rSecretPlain", "-p")
	path := writeFile(t, t.TempDir(), "htpasswd", "# users\n"+hashed+"\n"+plain+"\n")
	_, err := New(path, "", Options{})
	if err == nil {
		t.Fatal("New with a plaintext entry succeeded; want an error")
	}
	msg := err.Error()
	for _, want := range []string{path + ":3", `"dave"`, "plaintext"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "Sup3rSecretPlain") {
		t.Errorf("error %q leaks the password", msg)
	}
	a, err := New(path, "", Options{AllowPlaintext: true})
	if err != nil {
		t.Fatalf("New(AllowPlaintext): %v", err)
	}
	if r := a.Check(testClient, basic("dave", "Sup3rSecretPlain")); r.Status != StatusOK {
		t.Errorf("Check(plaintext) = %+v; want OK", r)
	}
}

// okBcrypt is okPass hashed by `htpasswd -nbB -C 4`, for tests that need a
// valid entry without running the tool.
const (
	okBcrypt = "$2y$04$EpO6kOXNg5Ih8nR1fe7o7.aCv1mMAWUKj2lVML9i4y0PNWep8I7Hy"
	okPass   = "s3cret:x"
)

func TestParseHtpasswdErrors(t *testing.T) {
	tests := []struct {
		name, line string
		plain      bool
		want       string // in the error, after "f:2: "
	}{
		{"no colon", "justtext", false, "malformed line"},
		{"empty user", ":" + okBcrypt, false, "invalid user name"},
		{"control char user", "a\x01b:" + okBcrypt, false, "invalid user name"},
		{"duplicate", "alice:" + okBcrypt, false, `user "alice" already defined on line 1`},
		{"empty hash", "bob:", false, "empty password hash"},
		{"empty hash plaintext allowed", "bob:", true, "empty password hash"},
		{"empty {PLAIN}", "bob:{PLAIN}", true, "empty password hash"},
		{"plaintext", "bob:hunter2", false, "plaintext password not allowed"},
		{"{PLAIN} not allowed", "bob:{PLAIN}hunter2", false, "plaintext password not allowed"},
		{"short bcrypt", "bob:" + okBcrypt[:40], false, "malformed bcrypt hash"},
		{"bcrypt cost 3", "bob:$2y$03" + okBcrypt[6:], false, "malformed bcrypt hash"},
		{"bcrypt cost 18", "bob:$2y$18" + okBcrypt[6:], false, "malformed bcrypt hash"},
		{"sha256 rounds too high", "bob:$5$rounds=10000000$KUN4x0PhTkbu5mif$Gftlod0JZfObaOISoY43PYfy1E3kXtco1EHqTP7PNx6", false, "malformed SHA-256-crypt hash"},
		{"bcrypt $2z$", "bob:$2z$" + okBcrypt[4:], true, "malformed bcrypt hash"},
		{"bcrypt $2x$", "bob:$2x$" + okBcrypt[4:], false, "$2x$"},
		{"apr1 no hash", "bob:$apr1$abcdefgh", false, "malformed MD5-crypt hash"},
		{"apr1 long salt", "bob:$apr1$abcdefghi$QWWM/t.W/IPbvGLas0CuL/", false, "malformed MD5-crypt hash"},
		{"sha256 bad rounds", "bob:$5$rounds=abc$KUN4x0PhTkbu5mif$Gftlod0JZfObaOISoY43PYfy1E3kXtco1EHqTP7PNx6", false, "malformed SHA-256-crypt hash"},
		{"sha256 rounds only", "bob:$5$rounds=5000$KUN4x0PhTkbu5mif", false, "malformed SHA-256-crypt hash"},
		{"sha256 low rounds", "bob:$5$rounds=999$KUN4x0PhTkbu5mif$Gftlod0JZfObaOISoY43PYfy1E3kXtco1EHqTP7PNx6", false, "malformed SHA-256-crypt hash"},
		{"sha512 short", "bob:$6$eFKh0yaROh3ixdtS$xMEeIHJju7lRy7dTq6ezMjc2xX", false, "malformed SHA-512-crypt hash"},
		{"sha1 bad base64", "bob:{SHA}FEI6rNnb7XvP5yNyknSZvByyHb!=", false, "malformed {SHA} hash"},
		{"sha1 short", "bob:{SHA}FEI6rNnb7XvP5yNy", false, "malformed {SHA} hash"},
		{"ssha", "bob:{SSHA}FEI6rNnb7XvP5yNyknSZvByyHbQ=", true, "unsupported hash scheme"},
		{"yescrypt", "bob:$y$j9T$abc$def", true, "unsupported hash scheme"},
		{"DES with plaintext allowed", "bob:3iII5k82kmDX2", true, "crypt(3) DES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := "alice:" + okBcrypt + "\n" + tt.line + "\n"
			_, err := parseHtpasswd("f", []byte(data), tt.plain)
			if err == nil {
				t.Fatalf("parseHtpasswd(%q) succeeded; want error containing %q", tt.line, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, "f:2: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("parseHtpasswd(%q) error = %q; want line 2 and %q", tt.line, msg, tt.want)
			}
			if _, enc, _ := strings.Cut(tt.line, ":"); len(enc) > len(plainPrefix) && strings.Contains(err.Error(), enc) {
				t.Errorf("error %q quotes the hash", err)
			}
		})
	}
	if _, err := parseHtpasswd("f", []byte("# only a comment\n\n"), false); err == nil || !strings.Contains(err.Error(), "no users") {
		t.Errorf("empty file: err = %v; want no users", err)
	}
}

// TestParseHtpasswdLayout checks comments, blank lines, CRLF, surrounding
// blanks and {PLAIN} (which also makes a DES-looking password loadable).
func TestParseHtpasswdLayout(t *testing.T) {
	data := "# comment: with colon\r\n\r\n  alice:" + okBcrypt + "  \r\n\t# indented comment\nbob:{PLAIN}3iII5k82kmDX2\n"
	u, err := parseHtpasswd("f", []byte(data), true)
	if err != nil {
		t.Fatalf("parseHtpasswd: %v", err)
	}
	if len(u.byName) != 2 || u.byName["alice"] == nil || u.byName["bob"] == nil {
		t.Fatalf("users = %v; want alice and bob", u.byName)
	}
	if !u.byName["bob"].MatchesPassword("3iII5k82kmDX2") || u.byName["bob"].MatchesPassword("{PLAIN}3iII5k82kmDX2") {
		t.Error("{PLAIN} entry does not match exactly its password")
	}
	if u.dummy != u.byName["alice"] {
		t.Error("dummy is not the bcrypt entry")
	}
}

// FuzzParseHash checks that any hash the loader accepts can be matched
// without panicking (go-htpasswd's SHA-crypt panics on some malformed input).
func FuzzParseHash(f *testing.F) {
	for _, s := range []string{okBcrypt, "$apr1$yoFQcZ3D$QWWM/t.W/IPbvGLas0CuL/",
		"$5$KUN4x0PhTkbu5mif$Gftlod0JZfObaOISoY43PYfy1E3kXtco1EHqTP7PNx6",
		"$5$rounds=10000$vlmVBA6LA4.l37MW$Fn5wKj7.ESLKMfS2AkQSqkRs4p0w18CpIRTIwjYvtX4",
		"$5$rounds=5000$KUN4x0PhTkbu5mif", "$5$rounds=x$a$b", "{SHA}FEI6rNnb7XvP5yNyknSZvByyHbQ=",
		"$1$abc$def", "plain", "{PLAIN}x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, enc string) {
		m, err := parseHash(enc, true)
		if err != nil {
			// Scheme prefixes such as "{PLAIN}" may appear in messages;
			// anything longer is hash material.
			if len(enc) > len(plainPrefix) && strings.Contains(err.Error(), enc) {
				t.Fatalf("error %q quotes the hash", err)
			}
			return
		}
		m.MatchesPassword("password")
	})
}
