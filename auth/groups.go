package auth

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// The groups file is Apache's htgroup format, "group: user1 user2", one
// group per line, with '#' comments and blank lines; commas also separate
// users ("group: user1, user2") because people write lists that way. A
// group may span several lines; they add up. Members need not exist in the
// htpasswd file (users may be added later), they just never authenticate.
//
// go-htpasswd has an htgroup reader, but it reports no line numbers, quotes
// whole lines in errors, takes "#" lines as groups and validates no names,
// so we parse the file ourselves; it is a dozen lines.

// groupSet maps a user to the set of groups they belong to.
type groupSet map[string]map[string]struct{}

func (g groupSet) add(user, group string) {
	if g[user] == nil {
		g[user] = make(map[string]struct{})
	}
	g[user][group] = struct{}{}
}

// sorted returns user -> sorted group names.
func (g groupSet) sorted() map[string][]string {
	out := make(map[string][]string, len(g))
	for user, set := range g {
		out[user] = slices.Sorted(maps.Keys(set))
	}
	return out
}

// loadGroups reads the groups file at path ("" for none) and merges extra
// (group -> users, from the YAML config).
func loadGroups(path string, extra map[string][]string) (map[string][]string, error) {
	g := groupSet{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("load groups: %w", err)
		}
		if err := parseGroups(path, data, g); err != nil {
			return nil, err
		}
	}
	if err := addGroups(g, extra); err != nil {
		return nil, err
	}
	return g.sorted(), nil
}

// parseGroups adds the groups in data (read from path) to g.
func parseGroups(path string, data []byte, g groupSet) error {
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		group, members, found := strings.Cut(line, ":")
		if !found {
			return fmt.Errorf("load groups %s:%d: malformed line: want \"group: user1 user2\"", path, n+1)
		}
		group = strings.TrimSpace(group)
		if err := checkGroupName(group); err != nil {
			return fmt.Errorf("load groups %s:%d: %w", path, n+1, err)
		}
		for _, user := range strings.FieldsFunc(members, isGroupSep) {
			if !validUser(user) {
				return fmt.Errorf("load groups %s:%d: group %q: user name with control characters", path, n+1, group)
			}
			g.add(user, group)
		}
	}
	return nil
}

// addGroups adds groups given as data (group -> users) to g.
func addGroups(g groupSet, extra map[string][]string) error {
	for _, group := range slices.Sorted(maps.Keys(extra)) {
		if err := checkGroupName(group); err != nil {
			return fmt.Errorf("groups option: %w", err)
		}
		for _, user := range extra[group] {
			if !validUser(user) {
				return fmt.Errorf("groups option: group %q: user names must be non-empty and free of control characters", group)
			}
			g.add(user, group)
		}
	}
	return nil
}

func isGroupSep(r rune) bool { return r == ' ' || r == '\t' || r == ',' }

// checkGroupName requires a non-empty name without blanks, commas, colons
// or control characters, so it reads the same in the file, the YAML config
// and ACL rules.
func checkGroupName(name string) error {
	if name == "" {
		return errors.New("empty group name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == 0x7f || c == ',' || c == ':' {
			return fmt.Errorf("group name %q: must not contain blanks, commas, colons or control characters", name)
		}
	}
	return nil
}

// LoadGroups reads a groups file ("" for none) and merges extra (group ->
// users, from the YAML config), as New does: it returns user -> sorted
// groups. The proxy uses it for users authenticated without a password
// (client certificates) when there is no htpasswd file.
func LoadGroups(path string, extra map[string][]string) (map[string][]string, error) {
	return loadGroups(path, extra)
}
