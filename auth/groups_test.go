package auth

import (
	"slices"
	"strings"
	"testing"
)

func TestParseGroups(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    map[string][]string // user -> groups
		wantErr string
	}{
		{"apache format", "admins: alice\nusers: alice bob\tcarol\n",
			map[string][]string{"alice": {"admins", "users"}, "bob": {"users"}, "carol": {"users"}}, ""},
		{"commas", "ops: alice, bob,carol\n",
			map[string][]string{"alice": {"ops"}, "bob": {"ops"}, "carol": {"ops"}}, ""},
		{"comments blanks crlf", "# team: nobody\r\n\r\n  ops :  alice  \r\n\t# x\n",
			map[string][]string{"alice": {"ops"}}, ""},
		{"repeated lines add up", "ops: alice\nops: bob alice\n",
			map[string][]string{"alice": {"ops"}, "bob": {"ops"}}, ""},
		{"empty group", "ops:\n", map[string][]string{}, ""},
		{"no colon", "ops alice\n", nil, "g:1: malformed line"},
		{"empty name", "ops: a\n: alice\n", nil, "g:2: empty group name"},
		{"blank in name", "my ops: alice\n", nil, `g:1: group name "my ops"`},
		{"control in member", "ops: al\x01ice\n", nil, `g:1: group "ops": user name with control`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := groupSet{}
			err := parseGroups("g", []byte(tt.data), g)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseGroups(%q) error = %v; want %q", tt.data, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseGroups(%q): %v", tt.data, err)
			}
			got := g.sorted()
			if len(got) != len(tt.want) {
				t.Fatalf("parseGroups(%q) = %v; want %v", tt.data, got, tt.want)
			}
			for user, want := range tt.want {
				if !slices.Equal(got[user], want) {
					t.Errorf("groups of %s = %v; want %v", user, got[user], want)
				}
			}
		})
	}
}

func TestGroups(t *testing.T) {
	dir := t.TempDir()
	users := writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\nbob:"+okBcrypt+"\n")
	groups := writeFile(t, dir, "groups", "users: alice bob\nadmins: alice\n")
	a, err := New(users, groups, Options{Groups: map[string][]string{"ops": {"bob", "alice"}, "admins": {"alice"}}})
	if err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string][]string{
		"alice":   {"admins", "ops", "users"},
		"bob":     {"ops", "users"},
		"nobody":  nil,
		"-unkno-": nil,
	} {
		got := a.Groups(user)
		if !slices.Equal(got, want) || (want == nil) != (got == nil) {
			t.Errorf("Groups(%q) = %#v; want %#v", user, got, want)
		}
	}
	a.Groups("alice")[0] = "mutated"
	if got := a.Groups("alice")[0]; got != "admins" {
		t.Errorf("caller's change leaked into Groups: %q", got)
	}
	writeFile(t, dir, "groups", "devs: bob\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := a.Groups("bob"); !slices.Equal(got, []string{"devs", "ops"}) {
		t.Errorf("after Reload, Groups(bob) = %v; want [devs ops]", got)
	}
	if got := a.Groups("alice"); !slices.Equal(got, []string{"admins", "ops"}) {
		t.Errorf("after Reload, Groups(alice) = %v; want [admins ops]", got)
	}
}
