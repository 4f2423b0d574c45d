package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/tg123/go-htpasswd"
)

// The go-htpasswd parsers do the hashing, but they are lenient where we must
// not be: AcceptPlain takes any string (so a typo'd or unsupported hash would
// become a plaintext password), the file reader ignores neither comments nor
// duplicates, its errors quote the hash, and AcceptCryptSha panics at match
// time on a malformed "rounds=" field. So we read the file ourselves,
// validate each hash's shape with the patterns below, and hand only
// well-formed hashes to the library's per-format parser.
var (
	// bcrypt: $2a$, $2b$ and $2y$ are the same algorithm; the letters record
	// which crypt_blowfish bugs the writer had fixed. $2x$ marks hashes made
	// by the buggy pre-2011 code and is refused: x/crypto would verify it as
	// $2b$, which differs for passwords with 8-bit characters. The cost is
	// limited to htpasswd's own range, 4..17 (17 takes seconds per check).
	reBcrypt = regexp.MustCompile(`^\$2[aby]\$(0[4-9]|1[0-7])\$[./A-Za-z0-9]{53}$`)
	// MD5-crypt: $apr1$ (htpasswd -m) and $1$ (glibc), salt up to 8 chars.
	reMD5 = regexp.MustCompile(`^\$(apr1|1)\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}$`)
	// SHA-crypt: $5$ (htpasswd -2) and $6$ (htpasswd -5); rounds as glibc
	// writes them (no leading zero, at least 1000) up to 9,999,999, about
	// two seconds per check: glibc allows 999,999,999, which would let one
	// request burn minutes of CPU. Salt up to 16 chars.
	reSHA256Crypt = regexp.MustCompile(`^\$5\$(rounds=[1-9][0-9]{3,6}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}$`)
	reSHA512Crypt = regexp.MustCompile(`^\$6\$(rounds=[1-9][0-9]{3,6}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$`)
	// {SHA}: unsalted SHA-1, base64 (htpasswd -s).
	reSHA1 = regexp.MustCompile(`^\{SHA\}[A-Za-z0-9+/]{27}=$`)
	// crypt(3) DES (htpasswd -d), which the library does not support.
	reDES = regexp.MustCompile(`^[./0-9A-Za-z]{13}$`)
)

// plainPrefix marks a plaintext entry explicitly (nginx's convention); it
// also lets a plaintext password that happens to look like a DES hash load.
const plainPrefix = "{PLAIN}"

// users is one loaded htpasswd file.
type users struct {
	byName map[string]htpasswd.EncodedPasswd
	// sums holds a SHA-256 of each user's stored hash, so a Reload can
	// tell whose password changed without keeping the hash text.
	sums map[string][sha256.Size]byte
	// dummy is checked, result discarded, for names not in the file, so an
	// unknown user costs about what a known one does (see Check).
	dummy htpasswd.EncodedPasswd
}

// loadHtpasswd reads and parses the htpasswd file at path.
func loadHtpasswd(path string, allowPlain bool) (*users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load htpasswd: %w", err)
	}
	return parseHtpasswd(path, data, allowPlain)
}

// parseHtpasswd parses htpasswd data: "user:hash" lines, blank lines and
// lines starting with '#'. Surrounding blanks (and a CR) are trimmed, as both
// Apache and go-htpasswd do. Every bad line is an error naming the file, the
// line number and (when there is one) the user, never the hash or password:
// a half-understood user file is better refused than half loaded.
func parseHtpasswd(path string, data []byte, allowPlain bool) (*users, error) {
	u := &users{byName: make(map[string]htpasswd.EncodedPasswd), sums: make(map[string][sha256.Size]byte)}
	firstLine := make(map[string]int)
	var firstBcrypt htpasswd.EncodedPasswd
	for n, line := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		name, enc, found := strings.Cut(line, ":")
		if !found {
			return nil, fmt.Errorf("load htpasswd %s:%d: malformed line: want user:hash", path, lineNo)
		}
		if !validUser(name) {
			return nil, fmt.Errorf("load htpasswd %s:%d: invalid user name: empty or with control characters", path, lineNo)
		}
		if prev, dup := firstLine[name]; dup {
			return nil, fmt.Errorf("load htpasswd %s:%d: user %q already defined on line %d", path, lineNo, name, prev)
		}
		m, err := parseHash(enc, allowPlain)
		if err != nil {
			return nil, fmt.Errorf("load htpasswd %s:%d: user %q: %w", path, lineNo, name, err)
		}
		firstLine[name] = lineNo
		u.byName[name] = m
		u.sums[name] = sha256.Sum256([]byte(enc))
		if u.dummy == nil {
			u.dummy = m
		}
		if firstBcrypt == nil && strings.HasPrefix(enc, "$2") {
			firstBcrypt = m
		}
	}
	if len(u.byName) == 0 {
		// Most likely a truncated or wrong file; refusing it makes Reload
		// keep the old users instead of locking everyone out.
		return nil, fmt.Errorf("load htpasswd %s: no users", path)
	}
	if firstBcrypt != nil {
		u.dummy = firstBcrypt // the common, and slowest, case
	}
	return u, nil
}

// Errors from parseHash. They describe the problem without quoting the hash.
var (
	errPlaintext = errors.New("plaintext password not allowed: re-hash it with htpasswd -B, or enable plaintext entries")
	errEmptyHash = errors.New("empty password hash")
)

// parseHash validates one encoded password and returns its matcher.
func parseHash(enc string, allowPlain bool) (htpasswd.EncodedPasswd, error) {
	var (
		re     *regexp.Regexp
		kind   string
		accept htpasswd.PasswdParser
	)
	switch {
	case enc == "":
		return nil, errEmptyHash
	case strings.HasPrefix(enc, "$2x$"):
		return nil, errors.New("bcrypt $2x$ hashes (buggy crypt_blowfish) are not supported: re-hash with htpasswd -B")
	case strings.HasPrefix(enc, "$2"):
		re, kind, accept = reBcrypt, "bcrypt", htpasswd.AcceptBcrypt
	case strings.HasPrefix(enc, "$apr1$"), strings.HasPrefix(enc, "$1$"):
		re, kind, accept = reMD5, "MD5-crypt", htpasswd.AcceptMd5
	case strings.HasPrefix(enc, "$5$"):
		re, kind, accept = reSHA256Crypt, "SHA-256-crypt", htpasswd.AcceptCryptSha
	case strings.HasPrefix(enc, "$6$"):
		re, kind, accept = reSHA512Crypt, "SHA-512-crypt", htpasswd.AcceptCryptSha
	case strings.HasPrefix(enc, "{SHA}"):
		re, kind, accept = reSHA1, "{SHA}", htpasswd.AcceptSha
	case strings.HasPrefix(enc, plainPrefix):
		return newPlain(strings.TrimPrefix(enc, plainPrefix), allowPlain)
	case enc[0] == '$' || enc[0] == '{':
		// yescrypt, scrypt, argon2, {SSHA}...: never fall through to
		// plaintext, or the hash string itself would become the password.
		return nil, errors.New("unsupported hash scheme: use bcrypt (htpasswd -B), MD5 (-m), SHA-256/512 (-2/-5) or {SHA} (-s)")
	case !allowPlain:
		return nil, errPlaintext
	case reDES.MatchString(enc):
		return nil, errors.New("looks like a crypt(3) DES hash (htpasswd -d), which is not supported: re-hash with htpasswd -B, or prefix a plaintext password with {PLAIN}")
	default:
		return newPlain(enc, allowPlain)
	}
	if !re.MatchString(enc) {
		return nil, fmt.Errorf("malformed %s hash", kind)
	}
	m, err := accept(enc)
	if err != nil || m == nil {
		// The library's error quotes the hash: do not wrap it.
		return nil, fmt.Errorf("malformed %s hash", kind)
	}
	return m, nil
}

// plainPasswd is a plaintext entry, kept as its SHA-256 so that comparing
// digests in constant time leaks neither the content nor the length.
type plainPasswd struct{ sum [sha256.Size]byte }

func newPlain(pw string, allowPlain bool) (htpasswd.EncodedPasswd, error) {
	if !allowPlain {
		return nil, errPlaintext
	}
	if pw == "" {
		return nil, errEmptyHash
	}
	return &plainPasswd{sum: sha256.Sum256([]byte(pw))}, nil
}

// MatchesPassword implements htpasswd.EncodedPasswd.
func (p *plainPasswd) MatchesPassword(pw string) bool {
	got := sha256.Sum256([]byte(pw))
	return subtle.ConstantTimeCompare(got[:], p.sum[:]) == 1
}
